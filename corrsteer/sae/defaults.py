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
- when the shared datasets exist (``$CORRSTEER_DATA``, else ``../shared/datasets``
  beside the repository root): ``n_per_dataset`` rows, drawn with seed ``seed``, from each
  of MMLU test (question and its four choices), BBQ (context and question), SST-2 train
  (sentence) and GSM8K train (question).

The texts are shuffled together with seed ``seed`` before harvesting.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from corrsteer.models import find_layers, model_id
from corrsteer.models.embedded import cache_dir as user_cache
from corrsteer.sae.harvest import harvest, sample_texts
from corrsteer.sae.model import SAE
from corrsteer.sae.train import train_sae, warn_if_degenerate

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


def data_dir() -> Path | None:
    """The shared datasets folder: ``$CORRSTEER_DATA``, else ``<repo>/../shared/datasets``."""
    env = os.environ.get("CORRSTEER_DATA")
    cands = [Path(env)] if env else []
    cands.append(Path(__file__).resolve().parents[2].parent / "shared" / "datasets")
    return next((p for p in cands if p.is_dir()), None)


def dataset_texts(root: Path, n_per_dataset: int, seed: int = 0) -> list[str]:
    """Up to ``n_per_dataset`` texts from each of MMLU, BBQ, SST-2 and GSM8K under ``root``."""
    rng = random.Random(seed)
    out: list[str] = []

    def pick(rows: list[str]) -> None:
        rows = [r for r in rows if r.strip()]
        out.extend(rng.sample(rows, min(n_per_dataset, len(rows))))

    mmlu = sorted((root / "mmlu" / "test").glob("*.csv"))
    if mmlu:
        rows = []
        for f in mmlu:
            with f.open(encoding="utf-8", newline="") as fh:
                for r in csv.DictReader(fh):
                    rows.append(" ".join([r["question"]] + [r[f"choice{i}"] for i in range(4)]))
        pick(rows)
    bbq = sorted((root / "bbq").glob("*.jsonl"))
    if bbq:
        rows = []
        for f in bbq:
            for line in f.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    r = json.loads(line)
                    rows.append(f"{r['context']} {r['question']}")
        pick(rows)
    sst = root / "sst2" / "train.tsv"
    if sst.is_file():
        pick([line.split("\t", 1)[1] for line in sst.read_text(encoding="utf-8").splitlines()
              if "\t" in line])
    gsm = root / "gsm8k" / "train.jsonl"
    if gsm.is_file():
        pick([json.loads(line)["question"] for line in gsm.read_text(encoding="utf-8").splitlines()
              if line.strip()])
    return out


def default_texts(model: Any, tokenizer: Any, settings: DefaultSettings,
                  progress: bool = True) -> tuple[list[str], dict[str, Any]]:
    """The default text mix (module docstring) and a description of it for the cache key."""
    texts = sample_texts(model, tokenizer, settings.n_samples, max_new_tokens=settings.sample_tokens,
                         seed=settings.seed, progress=progress) if settings.n_samples else []
    n_model = len(texts)
    root = data_dir()
    if root is not None and settings.n_per_dataset:
        texts += dataset_texts(root, settings.n_per_dataset, settings.seed)
    random.Random(settings.seed).shuffle(texts)
    desc = {"model_samples": n_model, "datasets": "mmlu,bbq,sst2,gsm8k" if root else None,
            "n_texts": len(texts)}
    logger.info("default SAE texts: %d model samples + %d dataset rows (%s)", n_model,
                len(texts) - n_model, root)
    return texts, desc


def cache_root(model: Any, settings: DefaultSettings, cache_dir: str | os.PathLike | None = None,
               data_available: bool | None = None) -> Path:
    """``<cache>/saes/<model id>/<settings hash>`` for this model and these settings."""
    base = Path(cache_dir) if cache_dir is not None else user_cache()
    mid = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id(model))
    key = dict(asdict(settings), trainer=TRAINER_VERSION,
               datasets=data_dir() is not None if data_available is None else data_available)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return base / "saes" / mid / digest


def train_default_saes(model: Any, tokenizer: Any, layers: Sequence[int] | None = None, *,
                       cache: bool = True, cache_dir: str | os.PathLike | None = None,
                       settings: DefaultSettings | None = None, progress: bool = True, train: bool = True,
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
                if warn_if_degenerate((out[l].meta or {}).get("metrics") or {}, f"the cached default SAE {d}"):
                    logger.warning("delete %s to retrain it with the current harvest", d)
    todo = [l for l in layers if l not in out]
    if not todo:
        return out
    where = f"in {root}" if root is not None else "(cache=False)"
    if not train:
        raise ValueError(f"no cached default SAE for layers {todo} of {model_id(model)} {where}; train them once "
                         f"with `corrsteer train-sae --layers {','.join(map(str, todo))}`, or drop --no-train")
    logger.warning("no cached default SAE for layers %s of %s %s: sampling %d texts, harvesting %d tokens per layer "
                   "and training %d SAE(s) now; this usually takes 1-3 minutes per layer for Gemma 3 270M on 2 CPU "
                   "cores, longer for larger models (--no-train refuses instead)", todo, model_id(model), where,
                   settings.n_samples, settings.n_tokens, len(todo))
    texts, desc = default_texts(model, tokenizer, settings, progress)
    acts = harvest(model, tokenizer, texts, todo, settings.n_tokens, max_length=settings.max_length,
                   progress=progress)
    for l in todo:
        sae, metrics = train_sae(acts.pop(l), settings.d_sae, settings.k, epochs=settings.epochs,
                                 batch_size=settings.batch_size, lr=settings.lr, seed=settings.seed,
                                 progress=progress, layer=l, site="resid_post", model_name=model_id(model))
        sae.meta.update({"texts": desc, "default_settings": asdict(settings)})
        if root is not None:
            sae.meta["cache_path"] = str(root / f"layer_{l}")
            sae.save(root / f"layer_{l}")
        out[l] = sae
        logger.info("default SAE layer %d: EV %.3f L0 %.1f dead %.3f", l,
                    metrics["explained_variance"], metrics["l0"], metrics["dead_fraction"])
    return out
