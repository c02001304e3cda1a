"""Why a 16k default SAE has too many dead latents: the same harvested tokens, trained with the
`default-16k` settings and with one change at a time.

    python scripts/sae_dead_latents.py [N_TOKENS] [VARIANT ...]   # default 300000, all variants

Harvests N_TOKENS residuals of layer 3 from the default mix's dataset rows (3,000 per dataset, no
model samples; kept in the temp folder for a rerun), then trains TopK SAEs (16,384 latents, k 32, one epoch,
batch 1,024, lr 5e-4: the `default-16k` settings) and prints, per variant, its held-out explained
variance and dead share (latents that never fire on the held-out 5%), and the share that fires on none of
the N_TOKENS. Variants: `base`; `dead8k` (AuxK from 8,192 tokens without firing instead
of a quarter of the training tokens); `epochs3` (3 passes: 3x the steps and time); `batch256`
(batch 256: 4x the steps on the same tokens, about the same time); `lr2e-3`; `aux` (k_aux 512,
AuxK coefficient 1/8); `d8k` (8,192 latents).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

from corrsteer.models import load_model
from corrsteer.sae.defaults import data_dir, dataset_texts
from corrsteer.sae.harvest import harvest
from corrsteer.sae.train import evaluate_sae, train_sae

BASE = dict(d_sae=16384, k=32, epochs=1.0, batch_size=1024, lr=5e-4, seed=0)
VARIANTS = {"base": {}, "dead8k": {"dead_tokens": 8192}, "epochs3": {"epochs": 3.0},
            "batch256": {"batch_size": 256}, "lr2e-3": {"lr": 2e-3},
            "aux": {"k_aux": 512, "aux_coef": 1 / 8}, "d8k": {"d_sae": 8192}}


def layer3_tokens(n_tok: int) -> np.ndarray:
    path = os.path.join(tempfile.gettempdir(), f"corrsteer_sae_dead_latents_L3_{n_tok}.npy")
    if os.path.exists(path):
        return np.load(path)
    model, tok = load_model("gemma-3-270m", dtype="float32")
    texts, _ = dataset_texts(data_dir(), 3000, seed=0)
    t0 = time.time()
    acts = harvest(model, tok, texts, [3], n_tok, max_length=128, progress=False)[3]
    print(f"harvested {acts.shape[0]} tokens in {time.time() - t0:.0f} s", flush=True)
    np.save(path, acts)
    return acts


def main() -> None:
    n_tok = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
    names = sys.argv[2:] or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    acts = layer3_tokens(n_tok)
    for name in names:
        t0 = time.time()
        cfg = {**BASE, **VARIANTS[name]}
        sae, m = train_sae(acts, progress=False, layer=3, **cfg)
        seconds = round(time.time() - t0)
        # the held-out 5% is few tokens per latent (15k tokens x 32 / 16k latents: 29 firings on average), so a
        # rare latent can look dead there: count the latents that fire on none of all N_TOKENS too
        weights = [torch.from_numpy(np.array(w)) for w in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec)]
        dead_all = evaluate_sae(*weights, cfg["k"], torch.from_numpy(acts))["dead_fraction"]
        print(json.dumps({"variant": name, **VARIANTS[name], "steps": m["steps"],
                          "explained_variance": round(m["explained_variance"], 4),
                          "dead_fraction": round(m["dead_fraction"], 4), "dead_on_all_tokens": round(dead_all, 4),
                          "seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()
