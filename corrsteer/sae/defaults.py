"""The default SAEs of a model: trained once with fixed settings, then read from a cache.

``train_default_saes(model, tokenizer)`` harvests residual activations at a spread of
layers (default ``DEFAULT_LAYERS``), trains one TopK SAE per layer (``train_sae``) and
saves each in the SAELens layout under

    $CORRSTEER_CACHE/saes/<model id>/<settings hash>/layer_{L}/

(``$CORRSTEER_CACHE`` defaults to ``~/.cache/corrsteer``). The model id comes from
``corrsteer.models.model_id`` (embedded name, hub id, or a weight fingerprint); the
settings hash covers every training setting and the text mix, so changing either trains
a new set. Each layer is written atomically; a later call loads the cached layers and
trains only the missing ones.

Default text mix (``default_texts``), documented here because it defines the SAEs:

- ``n_samples`` texts sampled from the model itself, each from BOS alone
  (``sample_texts``, seed ``seed``, temperature 1, ``sample_tokens`` new tokens);
- ``n_per_dataset`` rows, drawn with seed ``seed``, from each of MMLU test (question and
  its four choices), BBQ (context and question), SST-2 train (sentence) and GSM8K train
  (question), read from the shared datasets (``data_dir``, ``$CORRSTEER_DATA`` or
  ``../shared/datasets``: :mod:`corrsteer.storage.datasets`).

The texts are shuffled together with seed ``seed`` before harvesting.

The mix never changes silently with the environment. Every dataset is required: when one
is missing, :func:`default_texts` stops with a message naming it, instead of training
another set from what happens to be found (a mix without the datasets gave SAEs with
53–75% dead latents). Each file is checked against the datasets' ``SHA256SUMS``, and for
the default settings the digest of the drawn rows must be :data:`DATASET_ROWS_SHA256`. A
default SAE must also pass :data:`QUALITY` (explained variance, dead latents) on its
held-out tokens, whether just trained or read from the cache; one that does not is an
error, not a warning. The model samples depend on the CPU's float kernels (sampling at
temperature 1 turns a last-bit difference into another token), so their digest is
recorded in each SAE's ``meta["texts"]`` for comparing machines.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from corrsteer.errors import CorrsteerError
from corrsteer.models import d_model, find_layers, model_id
from corrsteer.models.embedded import cache_dir as user_cache
from corrsteer.sae.harvest import harvest, sample_texts
from corrsteer.sae.model import SAE
from corrsteer.sae.train import train_sae
from corrsteer.storage.datasets import ENV_VAR, candidate_roots, verify

logger = logging.getLogger(__name__)

# Four layers spread over the first two thirds of Gemma 3 270M's 18: each reaches explained
# variance >= 0.75 at L0 = 32 with 12 epochs (layer 15 needs ~24 epochs for 0.767, which
# doubles the cold start; train it explicitly with `corrsteer train-sae --layers 15`).
DEFAULT_LAYERS = (3, 6, 9, 12)
TRAINER_VERSION = 1  # bump when the trainer's arithmetic changes: invalidates every cache


@dataclass(frozen=True)
class DefaultSettings:
    """What a default SAE set is trained with; hashed into the cache path."""

    d_sae: int = 2048           # latents per SAE
    k: int = 32                 # active latents per token
    n_tokens: int = 40_000      # harvested tokens per layer (5 % held out)
    epochs: float = 12.0        # passes over the training tokens
    batch_size: int = 1024      # tokens per step
    lr: float = 1e-3            # Adam learning rate
    seed: int = 0               # sampling, shuffling, init
    n_samples: int = 32         # model samples in the text mix
    sample_tokens: int = 48     # new tokens per model sample
    n_per_dataset: int = 400    # rows per shared dataset in the text mix
    max_length: int = 128       # tokens per text when harvesting


# The datasets of the mix: (folder, file pattern) under the datasets root.
MIX_SOURCES = {"mmlu": "test/*.csv", "bbq": "*.jsonl", "sst2": "train.tsv", "gsm8k": "train.jsonl"}
# The named sets `--sae NAME` trains once and caches. "default": small and quick (about 3.5 min for four layers
# of Gemma 3 270M on 2 idle cores). The larger sets, for when the default's dictionary is too coarse, never in
# CI, share one mix of 1M tokens per layer (25x the default's) and differ in the latent count only, so they
# compare: "default-16k" (8x the latents) is experimental, its one measured training (1-2 h on 2 cores) gave
# layer 3 46.8% dead latents, refused by QUALITY; an ablation (scripts/sae_dead_latents.py) pointed at the
# latent count, not the step count or AuxK, hence "default-8k" (4x the latents), which fails too when measured
# (layer 3 31.7%, layer 6 55.9% dead) and steers no better by path (README, "Our SAEs").
_LARGE = dict(n_tokens=1_000_000, epochs=1.0, batch_size=1024, lr=5e-4, n_samples=1024, sample_tokens=64,
              n_per_dataset=12_000)  # the larger sets' shared mix and schedule: only the latent count differs
SETS = {"default": DefaultSettings(),
        "default-8k": DefaultSettings(d_sae=8192, **_LARGE),
        "default-16k": DefaultSettings(d_sae=16384, **_LARGE)}
HARVEST_BUDGET = 6 * 2**30  # bytes of float32 activations held at once; more layers than that: several passes
# sha256 of "\n".join(dataset rows) for the n_per_dataset and seed of each named set, on the datasets
# of ../shared/datasets (its SHA256SUMS): the sets are defined on exactly these rows.
DATASET_ROWS_SHA256 = {(400, 0): "1d83f92959c0faa1846c83b293fb1aaf67254c4c78f8169e9cd0e24945a85209",
                       (12_000, 0): "918a8894c76cad4b59c244448f4c75198e95c07abf019b3ec0ea5d5832110855"}
# A default SAE below this on its held-out tokens is refused (the degenerate sets trained without the
# datasets reached EV 0.45-0.54 and 43-75% dead latents; the real ones 0.77-0.94 and 0-16%).
QUALITY = {"min_explained_variance": 0.6, "max_dead_fraction": 0.3}


def data_dir(root: str | os.PathLike | None = None) -> Path:
    """The datasets root that holds every dataset of the mix (:data:`MIX_SOURCES`).

    Args:
        root: a datasets root to try first (e.g. ``--data-dir``); the default search order
            (:func:`corrsteer.storage.datasets.candidate_roots`) follows.

    Raises:
        FileNotFoundError: no root holds them all; the message names what is missing where,
            and why it matters.
    """
    tried = []
    for cand in ([Path(root).expanduser()] if root is not None else []) + candidate_roots():
        missing = [name for name, pattern in MIX_SOURCES.items() if not any((cand / name).glob(pattern))]
        if not missing:
            return cand
        tried.append(f"{cand} (missing: {', '.join(missing)})")
    raise FileNotFoundError(
        "the default SAEs are trained on model samples plus MMLU, BBQ, SST-2 and GSM8K text, and those datasets "
        "were not found:\n  " + "\n  ".join(tried) + f"\nSet ${ENV_VAR} (or pass --data-dir) to the datasets "
        "root. Training without them would give another, worse SAE set (53-75% dead latents in one such run) "
        "and other features from the same command; to train on other text on purpose, use `corrsteer "
        "train-sae --texts FILE --out DIR` and pass --sae DIR/layer_<L>,...")


def dataset_texts(root: Path, n_per_dataset: int, seed: int = 0) -> tuple[list[str], dict[str, str]]:
    """``n_per_dataset`` texts from each of MMLU, BBQ, SST-2 and GSM8K under ``root``, seeded.

    Returns:
        ``(texts, files)``: the rows in mix order, and ``{relative file: sha256}`` of every file read
        (each checked against the datasets' ``SHA256SUMS`` where there is one).
    """
    rng = random.Random(seed)
    out: list[str] = []
    files: dict[str, str] = {}

    def read(path: Path) -> str:
        verify(path)
        data = path.read_bytes()
        files[path.relative_to(root).as_posix()] = hashlib.sha256(data).hexdigest()
        return data.decode("utf-8")

    def pick(rows: list[str]) -> None:
        rows = [r for r in rows if r.strip()]
        out.extend(rng.sample(rows, min(n_per_dataset, len(rows))))

    rows = []
    for f in sorted((root / "mmlu").glob(MIX_SOURCES["mmlu"])):
        rows += [" ".join([r["question"]] + [r[f"choice{i}"] for i in range(4)])
                 for r in csv.DictReader(io.StringIO(read(f), newline=""))]
    pick(rows)
    rows = []
    for f in sorted((root / "bbq").glob(MIX_SOURCES["bbq"])):
        rows += [f"{r['context']} {r['question']}" for r in (json.loads(line) for line in read(f).splitlines()
                                                              if line.strip())]
    pick(rows)
    pick([line.split("\t", 1)[1] for line in read(root / "sst2" / "train.tsv").splitlines() if "\t" in line])
    pick([json.loads(line)["question"] for line in read(root / "gsm8k" / "train.jsonl").splitlines()
          if line.strip()])
    return out, files


def _digest(texts: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()


def default_texts(model: Any, tokenizer: Any, settings: DefaultSettings, progress: bool = True,
                  data_root: str | os.PathLike | None = None) -> tuple[list[str], dict[str, Any]]:
    """The default text mix (module docstring) and a description of it (counts, files, digests).

    Raises:
        FileNotFoundError: a dataset of the mix is missing (:func:`data_dir`).
        CorrsteerError: a dataset file or the drawn rows differ from the ones the default
            SAEs are defined on.
    """
    rows: list[str] = []
    desc: dict[str, Any] = {"datasets": None}
    if settings.n_per_dataset:  # checked before any sampling: a missing dataset stops at once
        root = data_dir(data_root)
        rows, files = dataset_texts(root, settings.n_per_dataset, settings.seed)
        expected = DATASET_ROWS_SHA256.get((settings.n_per_dataset, settings.seed))
        if expected is not None and _digest(rows) != expected:
            raise CorrsteerError(f"the dataset rows drawn from {root} (sha256 {_digest(rows)[:12]}...) are not the "
                                 f"ones the default SAEs are defined on ({expected[:12]}...): a dataset file there "
                                 "differs from the shared datasets' version (see its SHA256SUMS); point "
                                 f"${ENV_VAR} at the original files")
        desc = {"datasets": ",".join(MIX_SOURCES), "dataset_rows": len(rows), "dataset_rows_sha256": _digest(rows),
                "dataset_files": files}
    samples = sample_texts(model, tokenizer, settings.n_samples, max_new_tokens=settings.sample_tokens,
                           seed=settings.seed, progress=progress) if settings.n_samples else []
    texts = samples + rows
    random.Random(settings.seed).shuffle(texts)
    desc.update(model_samples=len(samples), model_samples_sha256=_digest(samples), n_texts=len(texts))
    logger.info("default SAE texts: %d model samples (sha256 %s...) + %d dataset rows", len(samples),
                desc["model_samples_sha256"][:12], len(rows))
    return texts, desc


def check_quality(sae: Any, where: str, quality: dict[str, float] | None = QUALITY) -> None:
    """Raise unless a default SAE's held-out metrics pass ``quality`` (:data:`QUALITY`; None: no bar)."""
    if quality is None:
        return
    m = sae.meta.get("metrics") or {}
    ev, dead = m.get("explained_variance"), m.get("dead_fraction")
    if ev is None or dead is None:
        raise CorrsteerError(f"{where} has no held-out metrics; delete it and let corrsteer train it again")
    if ev < quality["min_explained_variance"] or dead > quality["max_dead_fraction"]:
        raise CorrsteerError(f"{where} fails the default SAEs' quality bar: explained variance {ev:.3f} (needs >= "
                             f"{quality['min_explained_variance']}), dead latents {dead:.1%} (needs <= "
                             f"{quality['max_dead_fraction']:.0%}). Either its training text was not the default mix "
                             "(trained without the datasets), or its settings ask for more latents than its training "
                             "tokens support (many never fire: use fewer latents or more tokens; more optimizer steps "
                             "on the same tokens did not help when measured, README 'Our SAEs')")


def cache_root(model: Any, settings: DefaultSettings, cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache>/saes/<model id>/<settings hash>`` for this model and these settings.

    The key has held ``datasets=True`` since the mix's datasets became required, so caches
    written before keep their place.
    """
    base = Path(cache_dir) if cache_dir is not None else user_cache()
    mid = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id(model))
    key = dict(asdict(settings), trainer=TRAINER_VERSION, datasets=bool(settings.n_per_dataset))
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return base / "saes" / mid / digest


def train_default_saes(model: Any, tokenizer: Any, layers: Sequence[int] | None = None, *,
                       cache: bool = True, cache_dir: str | os.PathLike | None = None,
                       settings: DefaultSettings | None = None, progress: bool = True, train: bool = True,
                       data_root: str | os.PathLike | None = None, quality: dict[str, float] | None = QUALITY,
                       **overrides: Any) -> dict[int, Any]:
    """Train (or load from the cache) the default SAE of each layer.

    Args:
        model, tokenizer: e.g. ``corrsteer.models.load_model("gemma-3-270m")``.
        layers: decoder layers; default ``DEFAULT_LAYERS`` (clipped to the model's depth).
        cache: read and write the cache; ``False`` always trains and writes nothing.
        cache_dir: the cache base instead of ``$CORRSTEER_CACHE``.
        settings: ``DefaultSettings``; ``**overrides`` replace single fields.
        progress: tqdm bars for sampling, harvesting and training.
        train: train the layers missing from the cache (a warning says so first); False raises
            ``ValueError`` naming them instead.
        data_root: the datasets root to try first for the text mix (:func:`data_dir`).
        quality: the bar every SAE must pass (:data:`QUALITY`); None skips it (tests, experiments).

    Returns:
        ``{layer: SAE}``; each SAE has ``hook_name = "blocks.{L}.hook_resid_post"``,
        ``layer``, ``site = "resid_post"``, ``model_name`` and ``meta`` with the held-out
        ``metrics`` (explained variance, L0, dead fraction), ``config`` and ``cache_path``.
    """
    settings = settings or DefaultSettings()
    if overrides:
        settings = DefaultSettings(**{**asdict(settings), **overrides})
    n_layers = len(find_layers(model))
    layers = sorted({int(l) for l in (layers if layers is not None else
                                      [l for l in DEFAULT_LAYERS if l < n_layers])})
    root = cache_root(model, settings, cache_dir) if cache else None
    out: dict[int, Any] = {}
    if root is not None:
        for l in layers:
            d = root / f"layer_{l}"
            if (d / "cfg.json").is_file():
                out[l] = SAE.load(d)
                logger.info("default SAE layer %d: cache hit %s", l, d)
                check_quality(out[l], f"the cached default SAE {d}", quality)
    todo = [l for l in layers if l not in out]
    if not todo:
        return out
    where = f"in {root}" if root is not None else "(cache=False)"
    if not train:
        raise ValueError(f"no cached default SAE for layers {todo} of {model_id(model)} {where}; train them once "
                         f"with `corrsteer train-sae --layers {','.join(map(str, todo))}`, or drop --no-train")
    logger.warning("no cached default SAE for layers %s of %s %s: sampling %d texts, harvesting %d tokens per layer "
                   "and training %d SAE(s) now; for Gemma 3 270M on 2 CPU cores the 'default' set takes about a "
                   "minute per layer and 'default-8k' or 'default-16k' one to two hours in all, larger models "
                   "longer (--no-train refuses instead)", todo, model_id(model), where, settings.n_samples,
                   settings.n_tokens, len(todo))
    texts, desc = default_texts(model, tokenizer, settings, progress, data_root)
    per_layer = settings.n_tokens * d_model(model) * 4
    group = max(1, HARVEST_BUDGET // per_layer)  # layers harvested per forward pass over the texts
    acts: dict[int, Any] = {}
    for l in todo:
        if l not in acts:
            acts = harvest(model, tokenizer, texts, todo[todo.index(l):todo.index(l) + group], settings.n_tokens,
                           max_length=settings.max_length, progress=progress)
        sae, metrics = train_sae(acts.pop(l), settings.d_sae, settings.k, epochs=settings.epochs,
                                 batch_size=settings.batch_size, lr=settings.lr, seed=settings.seed,
                                 progress=progress, layer=l, site="resid_post", model_name=model_id(model))
        sae.meta.update({"texts": desc, "default_settings": asdict(settings)})
        try:
            check_quality(sae, f"the default SAE just trained for layer {l}", quality)  # never cached if degenerate
        except CorrsteerError as exc:
            if root is None:
                raise
            kept = root.parent / "refused" / root.name / f"layer_{l}"  # outside every set: never loaded as a default
            sae.save(kept)  # hours of training are not thrown away: inspect it, or use it knowingly
            raise CorrsteerError(f"{exc}. It is kept outside the cache in {kept}: `--sae {kept}` uses it anyway; "
                                 "the layers before it are cached") from None
        if root is not None:
            sae.meta["cache_path"] = str(root / f"layer_{l}")
            sae.save(root / f"layer_{l}")
        out[l] = sae
        logger.info("default SAE layer %d: EV %.3f L0 %.1f dead %.3f", l,
                    metrics["explained_variance"], metrics["l0"], metrics["dead_fraction"])
    return out


def cached_sets(cache_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """The default SAE sets in the cache, read from their configs (no weights loaded).

    Returns:
        One dict per set: ``model``, ``settings_hash``, ``path``, ``texts`` (the training mix: counts
        and digests) and ``layers``: ``{layer: {explained_variance, l0, dead_fraction}}``.
    """
    base = (Path(cache_dir) if cache_dir is not None else user_cache()) / "saes"
    out = []
    for root in sorted(p for p in base.glob("*/*") if p.is_dir()):
        layers, texts = {}, {}
        for cfg_path in sorted(root.glob("layer_*/cfg.json"), key=lambda p: int(p.parent.name.split("_")[1])):
            try:
                meta = json.loads(cfg_path.read_text(encoding="utf-8")).get("corrsteer") or {}
            except (OSError, ValueError):
                meta = {}
            m = meta.get("metrics") or {}
            layers[cfg_path.parent.name.split("_")[1]] = {k: m.get(k) for k in ("explained_variance", "l0",
                                                                                  "dead_fraction")}
            texts = meta.get("texts") or texts
        if layers:
            out.append({"model": root.parent.name, "settings_hash": root.name, "path": str(root), "texts": texts,
                        "layers": layers})
    return out
