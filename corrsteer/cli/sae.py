"""``corrsteer train-sae``: harvest activations from a model and train TopK SAEs.

With ``--texts default`` (the default) and no ``--out``, trains the cached default set
(:mod:`corrsteer.sae.defaults`). Otherwise harvests from ``--texts`` (a .txt/.jsonl file,
or ``samples`` for the model's own samples) and saves ``<out>/layer_{L}/``. Prints one line
per layer with the held-out metrics.

Example::

    corrsteer train-sae --layers 15 --epochs 24
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from corrsteer.cli.common import add_global_flags, parse_layers

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train-sae`` to the ``corrsteer`` parser."""
    ap = sub.add_parser("train-sae", help="train TopK SAEs on a model", description=__doc__.split("\n\n")[0])
    add_global_flags(ap, top=False)
    ap.add_argument("--model", default="gemma-3-270m", help="embedded name, local dir, .gguf or hub id")
    ap.add_argument("--layers", default=None, help="decoder layers: 3,6,9 | 2-5 (default: the default set's)")
    g = ap.add_argument_group("training settings (default: those of the default SAE set, "
                              "corrsteer.sae.defaults.DefaultSettings)")
    g.add_argument("--d-sae", type=int, help="latents")
    g.add_argument("--k", type=int, help="active latents per token")
    g.add_argument("--tokens", type=int, dest="n_tokens", help="harvested tokens per layer")
    g.add_argument("--epochs", type=float, help="passes over the tokens")
    g.add_argument("--steps", type=int, default=None, help="optimizer steps (overrides --epochs)")
    g.add_argument("--lr", type=float, help="Adam learning rate")
    g.add_argument("--batch-size", type=int, help="tokens per step")
    g.add_argument("--seed", type=int, help="seed")
    ap.add_argument("--texts", default="default",
                    help="'default' (model samples + shared datasets), 'samples', or a .txt/.jsonl file")
    ap.add_argument("--out", default=None, help="output directory (default: the SAE cache)")
    ap.add_argument("--device", default=None, help="torch device")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    ap.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> None:
    from corrsteer.models import load_model, model_id
    from corrsteer.sae.defaults import DEFAULT_LAYERS, DefaultSettings, default_texts, train_default_saes
    from corrsteer.sae.harvest import harvest, load_texts, sample_texts
    from corrsteer.sae.train import train_sae

    layers = parse_layers(args.layers)
    given = {k: getattr(args, k) for k in ("d_sae", "k", "n_tokens", "epochs", "lr", "batch_size", "seed")
             if getattr(args, k) is not None}
    settings = DefaultSettings(**given)

    t0 = time.perf_counter()
    model, tok = load_model(args.model, device=args.device)
    progress = not args.no_progress
    if args.texts == "default" and args.out is None and args.steps is None:
        saes = train_default_saes(model, tok, layers, progress=progress, settings=settings)
    else:
        if args.texts == "default":
            texts, _ = default_texts(model, tok, settings, progress)
        elif args.texts == "samples":
            texts = sample_texts(model, tok, max(1, settings.n_tokens // 48), seed=settings.seed,
                                 progress=progress)
        else:
            texts = load_texts(args.texts)
        layers = list(layers or DEFAULT_LAYERS)
        acts = harvest(model, tok, texts, layers, settings.n_tokens, progress=progress)
        out = Path(args.out or "sae_out")
        saes = {}
        for l in layers:
            sae, _ = train_sae(acts.pop(l), settings.d_sae, settings.k, epochs=settings.epochs, steps=args.steps,
                               lr=settings.lr, batch_size=settings.batch_size, seed=settings.seed,
                               progress=progress, layer=l, model_name=model_id(model))
            sae.save(out / f"layer_{l}")
            sae.meta["cache_path"] = str(out / f"layer_{l}")
            saes[l] = sae
    print(f"{'layer':>5} {'EV':>7} {'L0':>6} {'dead':>6} {'tokens':>7} {'train s':>8}  path")
    for l, sae in sorted(saes.items()):
        m = sae.meta.get("metrics", {})
        print(f"{l:>5} {m.get('explained_variance', float('nan')):>7.4f} {m.get('l0', 0):>6.1f} "
              f"{m.get('dead_fraction', 0):>6.3f} {m.get('train_tokens', 0):>7} "
              f"{m.get('seconds', 0):>8.1f}  {sae.meta.get('cache_path', '')}")
    print(f"total {time.perf_counter() - t0:.1f} s")
