"""Why a 16k default SAE has too many dead latents: the same harvested tokens, trained with AuxK
starting at the trainer's default (a quarter of the training tokens) and at 8,192 tokens.

    python scripts/sae_dead_latents.py [N_TOKENS]     # default 300000; layer 3 of gemma-3-270m

Harvests N_TOKENS residuals of layer 3 from the default mix's dataset rows (3,000 per dataset, no
model samples), then trains two TopK SAEs (16,384 latents, k 32, one epoch, batch 1,024, lr 5e-4:
the `default-16k` settings) and prints their held-out explained variance and dead share.
"""

from __future__ import annotations

import json
import sys
import time

from corrsteer.models import load_model
from corrsteer.sae.defaults import data_dir, dataset_texts
from corrsteer.sae.harvest import harvest
from corrsteer.sae.train import train_sae


def main() -> None:
    n_tok = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
    model, tok = load_model("gemma-3-270m", dtype="float32")
    texts, _ = dataset_texts(data_dir(), 3000, seed=0)
    t0 = time.time()
    acts = harvest(model, tok, texts, [3], n_tok, max_length=128, progress=False)[3]
    print(f"harvested {acts.shape[0]} tokens in {time.time() - t0:.0f} s", flush=True)
    for dead_tokens in (None, 8192):
        t0 = time.time()
        _, m = train_sae(acts, 16384, 32, epochs=1.0, batch_size=1024, lr=5e-4, seed=0, progress=False,
                         dead_tokens=dead_tokens, layer=3)
        print(json.dumps({"dead_tokens": dead_tokens or "a quarter of the tokens", "steps": m["steps"],
                          "explained_variance": round(m["explained_variance"], 4),
                          "dead_fraction": round(m["dead_fraction"], 4), "seconds": round(time.time() - t0)}),
              flush=True)


if __name__ == "__main__":
    main()
