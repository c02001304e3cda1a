"""Comparing SAEs on one model by the label features they find (METHOD.md §7).

Two SAE sets read the same model on the same labelled texts; for each label, the best
``|r|`` each set reaches over all its layers and features is a measure of how cleanly
its dictionary separates that label. The table reads "label | SAE A | SAE B", each cell
the best ``|r|`` with its layer and feature, next to a chance level: the best ``|r|``
of the same set with the labels shuffled (one seeded permutation). The chance level
matters: the maximum of many null correlations grows with ``d_sae × n_layers`` and
shrinks like ``1/sqrt(n_texts)``, so a larger dictionary wins a little by chance alone.

Every set is encoded from one forward pass per batch (``corrsteer.studies.labels.correlate_sets``).
:func:`train_text_saes` trains a set on the labelled texts themselves (harvest +
``train_sae``; the labels are not used), so that "our SAE trained on generic text" vs
"trained on task text" runs offline; a pre-trained SAE (Gemma Scope, SAELens) enters as
``--sae name=path``.

Example:
    >>> cmp = compare_saes(model, tok, {"generic": saes, "emgsd": emgsd_saes}, texts, labels)  # doctest: +SKIP
    >>> print(cmp.markdown())                                                                   # doctest: +SKIP
    | label | generic | emgsd |
    |---|---|---|
    | neutral | 0.312 (L6 #881) · chance 0.071 | 0.355 (L9 #12) · chance 0.068 |
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corrsteer.models import model_id
from corrsteer.sae.harvest import harvest
from corrsteer.sae.train import train_sae
from corrsteer.storage.atomic import write_json, write_text
from corrsteer.studies.labels import LabelCorrelations, correlate_sets

log = logging.getLogger(__name__)

__all__ = ["SAEComparison", "compare_saes", "train_text_saes"]


@dataclass
class SAEComparison:
    """The label correlations of several SAE sets on the same model and texts."""

    results: dict[str, LabelCorrelations]  # set name -> its one-vs-rest state (null kept)

    @property
    def labels(self) -> list[str]:
        return next(iter(self.results.values())).labels

    def rows(self) -> list[dict[str, Any]]:
        """One row per (label, set): ``{label, sae, layer, index, r, abs_r, chance}``.

        ``chance`` is the best ``|r|`` with the labels shuffled (None if not kept).
        """
        out = []
        for label in self.labels:
            for name, lc in self.results.items():
                best = lc.best(label)
                chance = abs(lc.best(label, null=True)["r"]) if lc.null is not None else None
                out.append({"label": label, "sae": name, **best, "abs_r": abs(best["r"]), "chance": chance})
        return out

    def markdown(self) -> str:
        """``| label | A | B |``: best |r| (layer, feature, sign) and the chance level per cell."""
        names = list(self.results)
        lines = ["| label | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        by = {(r["label"], r["sae"]): r for r in self.rows()}
        for label in self.labels:
            cells = []
            for name in names:
                r = by[(label, name)]
                cell = f"{r['abs_r']:.3f} (L{r['layer']} #{r['index']} {'+' if r['r'] >= 0 else '−'})"
                cells.append(cell + ("" if r["chance"] is None else f" · chance {r['chance']:.3f}"))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def save(self, directory: str | Path) -> Path:
        """Write ``comparison.json``, ``comparison.md`` and each set's state under ``<dir>/<set>/``."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        for name, lc in self.results.items():
            lc.save(root / name)
        meta = {name: lc.meta for name, lc in self.results.items()}
        write_json(root / "comparison.json", {"rows": self.rows(), "meta": meta}, indent=1)
        write_text(root / "comparison.md", self.markdown() + "\n")
        return root / "comparison.json"


def compare_saes(model: Any, tokenizer: Any, sae_sets: Mapping[str, Mapping[int, Any]], texts: Sequence[str],
                 labels: Sequence[Any], *, pool: str = "max", batch_size: int = 16, max_length: int = 128,
                 null_seed: int | None = 0, progress: bool = True) -> SAEComparison:
    """Best ``|r|`` per label for each SAE set, on the same model and texts.

    Args:
        model, tokenizer: a causal LM and its tokenizer.
        sae_sets: ``{name: {layer: SAE}}``, at least two sets (names become columns).
        texts, labels: (n_texts,) the labelled texts (see ``corrsteer.studies.labels``).
        pool, batch_size, max_length: as in ``corrsteer.studies.labels.label_correlations``.
        null_seed: seed of the label shuffle for the chance level; None = no chance level.
        progress: show a tqdm bar.

    Returns:
        :class:`SAEComparison`; ``.markdown()`` gives the "label | A | B" table.
    """
    if not isinstance(sae_sets, Mapping) or len(sae_sets) < 2:
        raise ValueError("sae_sets must map at least two names to {layer: SAE} sets, e.g. "
                         "{'generic': saes_a, 'task': saes_b}")
    for name in sae_sets:
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise ValueError(f"SAE set name {name!r} must be a non-empty str usable as a folder name")
    results = correlate_sets(model, tokenizer, sae_sets, texts, labels, pool=pool, batch_size=batch_size,
                             max_length=max_length, null_seed=null_seed, progress=progress)
    return SAEComparison(results)


def train_text_saes(model: Any, tokenizer: Any, texts: Sequence[str], layers: Sequence[int], *, d_sae: int = 2048,
                    k: int = 32, n_tokens: int = 40_000, epochs: float = 8.0, batch_size: int = 1024,
                    lr: float = 1e-3, seed: int = 0, max_length: int = 128,
                    progress: bool = True) -> dict[int, Any]:
    """Train one TopK SAE per layer on residuals of ``texts`` (harvest + ``train_sae``).

    Args:
        model, tokenizer: the model to read.
        texts: the training texts (their labels are not used).
        layers: decoder layers (site ``resid_post``).
        d_sae, k: latents and active latents per token.
        n_tokens: harvested tokens per layer (BOS and padding dropped; 5 % held out).
        epochs, batch_size, lr, seed: training settings (``corrsteer.sae.train.TrainConfig``).
        max_length: tokens per text when harvesting.
        progress: tqdm bars.

    Returns:
        ``{layer: SAE}`` with ``layer``, ``site``, ``hook_name`` set and the held-out
        metrics (explained variance, L0, dead fraction) in ``meta["metrics"]``.
    """
    layers = sorted({int(l) for l in layers})
    if not layers:
        raise ValueError("layers is empty; give the decoder layers to train SAEs for")
    acts = harvest(model, tokenizer, list(texts), layers, n_tokens, max_length=max_length, progress=progress)
    out = {}
    for layer in layers:
        sae, metrics = train_sae(acts.pop(layer), d_sae, k, epochs=epochs, batch_size=batch_size, lr=lr,
                                 seed=seed, progress=progress, layer=layer, model_name=model_id(model))
        sae.meta["texts"] = f"{len(texts)} labelled texts"
        log.info("text SAE layer %d: EV %.3f L0 %.1f dead %.3f", layer, metrics["explained_variance"],
                 metrics["l0"], metrics["dead_fraction"])
        out[layer] = sae
    return out
