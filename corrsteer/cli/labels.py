"""``corrsteer labels`` and ``corrsteer compare-saes``: features per label of a labelled dataset.

:func:`add_data_options` and :func:`data_from_args` are the dataset and model options both
commands share (``corrsteer debias`` reads label folders written by ``labels``). The
computation is :mod:`corrsteer.studies.labels` and :mod:`corrsteer.studies.sae_comparison`,
the data :mod:`corrsteer.studies.labelled`.

Example::

    corrsteer labels --dataset emgsd --model gemma-3-270m --sae default --n 2000 --out runs/labels_emgsd
    corrsteer compare-saes --dataset emgsd --n 2000 --layers 6,9 --sae generic=default --sae emgsd=train
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from corrsteer.cli.common import add_global_flags, parse_layers
from corrsteer.config import POOLS
from corrsteer.storage.atomic import write_text
from corrsteer.studies.labelled import LabelledTexts, load_labelled

__all__ = ["add_data_options", "data_from_args", "parse_sae_sets", "register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``labels`` and ``compare-saes`` to the ``corrsteer`` parser."""
    text = "per label and layer, the SAE features that fire for the label"
    p = sub.add_parser("labels", help=text, description=text[0].upper() + text[1:] + ".")
    add_global_flags(p, top=False)
    add_data_options(p)
    p.add_argument("--sae", default="default",
                   help="'default' (the model's trained SAEs) or SAE paths, comma-separated")
    p.add_argument("--top-k", type=int, default=5, help="features shown per label and layer (5)")
    p.set_defaults(handler=_labels)
    text = "best |r| per label of two or more SAE sets on one model"
    p = sub.add_parser("compare-saes", help=text, description=text[0].upper() + text[1:] + ".")
    add_global_flags(p, top=False)
    add_data_options(p)
    p.add_argument("--sae", action="append", default=[], required=True,
                   help="NAME=default | NAME=train (trained on the dataset's texts) | NAME=path[,path]; repeat")
    g = p.add_argument_group("NAME=train settings")
    g.add_argument("--train-d-sae", type=int, default=2048, help="latents (2048)")
    g.add_argument("--train-k", type=int, default=32, help="active latents per token (32)")
    g.add_argument("--train-tokens", type=int, default=40_000, help="harvested tokens per layer (40000)")
    g.add_argument("--train-epochs", type=float, default=8.0, help="passes over the tokens (8)")
    p.set_defaults(handler=_compare)


def add_data_options(p: argparse.ArgumentParser) -> None:
    """The options shared by ``corrsteer labels`` and ``corrsteer compare-saes``."""
    g = p.add_argument_group("data")
    g.add_argument("--dataset", required=True, help="emgsd | sst2 | a CSV/TSV/JSONL/JSON file")
    g.add_argument("--split", help="emgsd/sst2: train (default) | validation | test | all")
    g.add_argument("--text-column", default="text", help="files: the text column (text)")
    g.add_argument("--label-column", default="label", help="files: the label column (label)")
    g.add_argument("--group-column", help="files: a group column for --groups")
    g.add_argument("--groups", help="keep only these groups, comma-separated (emgsd: its categories)")
    g.add_argument("--keep-labels", help="keep only these labels, comma-separated (e.g. stereotype,neutral)")
    g.add_argument("--n", type=int, help="draw this many rows (seeded); default all")
    g.add_argument("--seed", type=int, default=0, help="seed of the draw (0)")
    g.add_argument("--data-dir", help="datasets root (default: ../shared/datasets or $CORRSTEER_DATA)")
    g = p.add_argument_group("model")
    g.add_argument("--model", default="gemma-3-270m", help="embedded name, HF folder, .gguf or hub id")
    g.add_argument("--device", help="torch device (default: cuda if available)")
    g.add_argument("--layers", help="layers: 3,6,9 | 2-5 | all (default: every SAE's layer)")
    g.add_argument("--pool", default="max", choices=POOLS, help="pooling over the text's tokens (max)")
    g.add_argument("--batch-size", type=int, default=16, help="texts per forward pass (16)")
    g.add_argument("--max-length", type=int, default=128, help="tokens per text (128)")
    g.add_argument("--out", help="output folder")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def data_from_args(args: argparse.Namespace) -> LabelledTexts:
    """:func:`load_labelled` with the options of :func:`add_data_options`."""
    groups = None if not args.groups else {g.strip() for g in args.groups.split(",") if g.strip()}
    keep_labels = None if not args.keep_labels else [k.strip() for k in args.keep_labels.split(",") if k.strip()]
    return load_labelled(args.dataset, split=args.split, text_column=args.text_column,
                         label_column=args.label_column, group_column=args.group_column, groups=groups,
                         keep_labels=keep_labels, n=args.n, seed=args.seed, data_dir=args.data_dir)


def parse_sae_sets(specs: Sequence[str]) -> dict[str, str]:
    """``["generic=default", "task=train"]`` -> ``{"generic": "default", "task": "train"}``."""
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ValueError(f"--sae {spec!r} must be NAME=default, NAME=train or NAME=path[,path]")
        if name.strip() in out:
            raise ValueError(f"--sae names must differ; {name.strip()!r} is given twice")
        out[name.strip()] = value.strip()
    if len(out) < 2:
        raise ValueError("give at least two --sae NAME=SPEC to compare, e.g. --sae generic=default --sae task=train")
    return out


def _labels(args: argparse.Namespace) -> None:
    from corrsteer.models import load_model, model_id
    from corrsteer.sae.sets import load_saes
    from corrsteer.studies.labels import label_correlations

    layers = parse_layers(args.layers)
    if args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
    t0 = time.perf_counter()
    data = data_from_args(args)  # bad data fails before the model loads
    model, tokenizer = load_model(args.model, device=args.device)
    saes = load_saes(args.sae, model, tokenizer, layers)
    lc = label_correlations(model, tokenizer, saes, data.texts, data.labels, groups=data.groups, pool=args.pool,
                            batch_size=args.batch_size, max_length=args.max_length, null_seed=args.seed,
                            progress=args.progress)
    lc.meta.update({"source": data.source, "model": model_id(model), "sae": args.sae, "command": args.command_line,
                    "total_s": round(time.perf_counter() - t0, 1)})
    out = Path(args.out or f"runs/labels_{Path(args.dataset).stem}")
    lc.save(out, k=max(args.top_k, 10))
    text = (f"# Label features: {data.source}\n\nmodel {lc.meta['model']} · SAE {args.sae} · pool {args.pool} · "
            f"{lc.n} texts {lc.counts} · {lc.meta['seconds']:.0f} s (total {lc.meta['total_s']:.0f} s)\n\n"
            f"`{args.command_line}`\n\n" + lc.markdown(args.top_k))
    write_text(out / "labels.md", text)
    print(text)
    print(f"saved {out / 'labels.json'}, {out / 'labels.md'} and {out / 'acc'}")


def _compare(args: argparse.Namespace) -> None:
    from corrsteer.models import find_layers, load_model, model_id
    from corrsteer.sae.defaults import DEFAULT_LAYERS
    from corrsteer.sae.sets import load_saes
    from corrsteer.studies.sae_comparison import compare_saes, train_text_saes

    specs = parse_sae_sets(args.sae)
    layers = parse_layers(args.layers)
    t0 = time.perf_counter()
    data = data_from_args(args)
    model, tokenizer = load_model(args.model, device=args.device)
    out = Path(args.out or f"runs/compare_saes_{Path(args.dataset).stem}")
    sets: dict[str, dict[int, Any]] = {name: load_saes(spec, model, tokenizer, layers)
                                       for name, spec in specs.items() if spec != "train"}
    for name, spec in specs.items():
        if spec == "train":
            train_layers = layers or sorted({l for s in sets.values() for l in s}) or \
                [l for l in DEFAULT_LAYERS if l < len(find_layers(model))]
            sets[name] = train_text_saes(model, tokenizer, data.texts, train_layers, d_sae=args.train_d_sae,
                                         k=args.train_k, n_tokens=args.train_tokens, epochs=args.train_epochs,
                                         seed=args.seed, max_length=args.max_length, progress=args.progress)
            for layer, sae in sets[name].items():
                sae.save(out / "saes" / name / f"layer_{layer}")
    t1 = time.perf_counter()
    cmp = compare_saes(model, tokenizer, {name: sets[name] for name in specs}, data.texts, data.labels,
                       pool=args.pool, batch_size=args.batch_size, max_length=args.max_length,
                       progress=args.progress)
    for name, lc in cmp.results.items():
        lc.meta.update({"source": data.source, "model": model_id(model), "sae": specs[name],
                        "layers": sorted(sets[name]), "d_sae": {l: int(s.d_sae) for l, s in sets[name].items()}})
    cmp.save(out)
    timing = f"SAE training {t1 - t0:.0f} s (incl. loading), correlation {time.perf_counter() - t1:.0f} s"
    text = (f"# SAE comparison: {data.source}\n\nmodel {model_id(model)} · {len(data.texts)} texts · "
            f"pool {args.pool} · " + ", ".join(f"{n}={s}" for n, s in specs.items()) + f" · {timing}\n\n"
            f"`{args.command_line}`\n\nbest |r| over layers and features (one-vs-rest), chance = best |r| "
            "with shuffled labels\n\n" + cmp.markdown() + "\n")
    write_text(out / "comparison.md", text)
    print(text)
    print(f"saved {out / 'comparison.json'} and {out / 'comparison.md'}")
