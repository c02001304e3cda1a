"""Train TopK sparse autoencoders on harvested activations (Gao et al. 2024, "Scaling and
evaluating sparse autoencoders").

Model, in the (optionally rescaled) training space ``x' = s·x``:

    pre = (x' - b_dec) @ W_enc + b_enc          (n_tok, d_sae)
    f   = ReLU(TopK_k(pre))                      k non-zeros per token
    x̂'  = f @ W_dec + b_dec                      W_dec rows kept at unit norm

Loss = ‖x' − x̂'‖² / ‖x' − mean‖²  +  1/32 · AuxK, where AuxK reconstructs the residual
``e = x' − x̂'`` with the ``k_aux`` largest pre-activations among *dead* latents (no
activation in the last ``dead_tokens`` training tokens), scaled by
``min(n_dead / k_aux, 1)``. Initialisation: W_dec rows random unit vectors, W_enc =
W_decᵀ, b_dec = the data mean (or geometric median), b_enc = 0. Adam; after each step the
decoder rows are renormalised and, before it, the gradient component parallel to each
row is projected out. The learning rate decays linearly to 0 over the last 20 % of steps.

Speed: only ``k`` (+ ``k_aux``) of ``d_sae`` latents are non-zero per token, so the
decoder is an ``embedding_bag`` and the encoder's backward pass touches only the selected
columns (``_SelectedPre``); the one dense product is the forward ``x @ W_enc``.

Export: the trained SAE is folded back to raw activations exactly:
``b_enc ← (b_enc − b_dec·W_enc)/s``, ``b_dec ← b_dec/s`` (W_enc, W_dec unchanged), so that
``encode(x) = f/s`` (same latents, activations in raw units) and ``decode`` returns
``x̂'/s``, with ``apply_b_dec_to_input=False``. Metrics are measured on held-out tokens
with the exported weights.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from corrsteer.sae.model import SAE

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Settings of ``train_sae`` (all recorded in the saved SAE's ``meta``)."""

    d_sae: int = 4096                 # number of latents
    k: int = 32                       # active latents per token
    steps: int | None = None          # optimizer steps; default from epochs
    epochs: float = 1.0               # passes over the training tokens when steps is None
    lr: float | None = None           # Adam lr; default 2e-4 · (d_sae / 16384) ** -0.5
    batch_size: int = 4096            # tokens per step
    seed: int = 0                     # seeds init, shuffling and the held-out split
    holdout: float = 0.05             # fraction of tokens held out for the metrics
    normalize: bool = True            # train on x / sqrt(mean ‖x‖²), folded back on export
    k_aux: int | None = None          # AuxK latents; default min(d_sae // 2, 2^round(log2(d_in/2)))
    aux_coef: float = 1 / 32          # AuxK coefficient
    dead_tokens: int | None = None    # dead after this many tokens without firing
    b_dec_init: str = "mean"          # "mean" | "median" (geometric median, Weiszfeld)
    decay_frac: float = 0.2           # linear lr decay over this last fraction of steps


class _SelectedPre(torch.autograd.Function):
    """``pre[i, idx[i, j]]`` for the selected latents, with a sparse backward pass.

    Forward takes the values already computed densely (under ``no_grad``); backward
    returns the gradients of ``xc @ W_enc + b_enc`` restricted to the selected entries,
    costing ``n_tok · n_sel · d_in`` instead of ``n_tok · d_sae · d_in``.
    """

    @staticmethod
    def forward(ctx: Any, xc: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor,
                idx: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(xc, W_enc, idx)
        ctx.d_sae = b_enc.shape[0]
        return values.clone()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        xc, W_enc, idx = ctx.saved_tensors
        n, m = idx.shape
        flat = idx.reshape(-1)
        grad_xc = grad_W = None
        if ctx.needs_input_grad[0]:  # row i: sum_j g_ij W_enc[:, idx_ij], as a bag sum
            grad_xc = F.embedding_bag(idx, W_enc.t().contiguous(), per_sample_weights=g,
                                      mode="sum")
        if ctx.needs_input_grad[1]:  # column s: sum over (i, j) with idx_ij = s of g_ij xc_i
            rows = torch.arange(n, device=idx.device).repeat_interleave(m)
            G_t = torch.sparse_coo_tensor(torch.stack([flat, rows]), g.reshape(-1),
                                          (ctx.d_sae, n), check_invariants=False)
            grad_W = torch.sparse.mm(G_t, xc).t()
        grad_b = torch.zeros(ctx.d_sae, dtype=g.dtype).index_add_(0, flat, g.reshape(-1))
        return grad_xc, grad_W, grad_b, None, None


def _geometric_median(x: torch.Tensor, iters: int = 30) -> torch.Tensor:
    y = x.mean(0)
    for _ in range(iters):
        w = 1.0 / torch.clamp(torch.linalg.vector_norm(x - y, dim=1), min=1e-8)
        y = (w[:, None] * x).sum(0) / w.sum()
    return y


def _as_tensor(acts: Any) -> torch.Tensor:
    if isinstance(acts, np.ndarray):
        if acts.dtype.kind != "f":
            raise TypeError(f"acts must be a float array, got dtype {acts.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(acts, dtype=np.float32))
    elif isinstance(acts, torch.Tensor):
        if not acts.is_floating_point():
            raise TypeError(f"acts must be a float tensor, got dtype {acts.dtype}")
        t = acts.detach().to("cpu", torch.float32).contiguous()
    else:
        raise TypeError(f"acts must be a numpy array or torch tensor, got {type(acts).__name__}")
    if t.ndim != 2:
        raise ValueError(f"acts must be (n_tok, d_in), got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError("acts contains NaN or inf; drop those rows before training")
    return t


def fold_to_raw(W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor, b_dec: torch.Tensor,
                scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weights trained on ``x' = scale·x`` with ``b_dec`` subtracted at the input, as weights
    for raw ``x`` with ``apply_b_dec_to_input=False``.

    ``pre_raw = x @ W_enc + (b_enc − b_dec·W_enc)/scale = pre'/scale``: the same TopK
    latents with activations divided by ``scale`` (TopK and ReLU commute with a positive
    factor), and ``f_raw @ W_dec + b_dec/scale = x̂'/scale``. W_enc and W_dec (unit rows)
    are unchanged.

    Returns:
        ``(W_enc, b_enc, W_dec, b_dec)`` for raw activations.
    """
    with torch.no_grad():
        return (W_enc.clone(), (b_enc - b_dec @ W_enc) / scale, W_dec.clone(), b_dec / scale)


def evaluate_sae(W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor,
                 b_dec: torch.Tensor, k: int, x: torch.Tensor,
                 chunk: int = 4096) -> dict[str, float]:
    """Explained variance, L0 and dead fraction of a TopK SAE (raw weights) on tokens ``x``.

    Args:
        W_enc: (d_in, d_sae); b_enc: (d_sae,); W_dec: (d_sae, d_in); b_dec: (d_in,).
        k: latents kept per token.
        x: (n_tok, d_in) held-out activations.

    Returns:
        ``explained_variance`` = 1 − Σ‖x − x̂‖² / Σ‖x − mean(x)‖², ``l0`` = mean number
        of non-zero latents per token, ``dead_fraction`` = share of latents that are
        zero on every token, ``n_tokens``.
    """
    if x.shape[0] == 0:
        raise ValueError("no held-out tokens to evaluate on")
    mean = x.double().mean(0)
    sse = tot = nnz = 0.0
    fired = torch.zeros(W_enc.shape[1], dtype=torch.bool)
    with torch.no_grad():
        for s in range(0, x.shape[0], chunk):
            xb = x[s:s + chunk]
            vals, idx = torch.topk(torch.addmm(b_enc, xb, W_enc), k, dim=1)
            vals = vals.clamp_min(0)
            xh = F.embedding_bag(idx, W_dec, per_sample_weights=vals, mode="sum") + b_dec
            sse += float(((xb - xh).double() ** 2).sum())
            tot += float(((xb.double() - mean) ** 2).sum())
            pos = vals > 0
            nnz += float(pos.sum())
            fired[idx[pos]] = True
    return {"explained_variance": 1.0 - sse / tot if tot > 0 else float("nan"),
            "l0": nnz / x.shape[0], "dead_fraction": float((~fired).float().mean()),
            "n_tokens": int(x.shape[0])}


def train_sae(acts: np.ndarray | torch.Tensor, d_sae: int = 4096, k: int = 32, *,
              progress: bool = True, eval_acts: np.ndarray | torch.Tensor | None = None, layer: int | None = None,
              site: str = "resid_post", model_name: str | None = None,
              **options: Any) -> tuple[SAE, dict[str, Any]]:
    """Train a TopK SAE on activations and return it with held-out metrics.

    Args:
        acts: (n_tok, d_in) float activations (one site, BOS removed).
        d_sae: number of latents.
        k: active latents per token.
        progress: show a tqdm bar with loss and explained variance.
        eval_acts: (n_eval, d_in) held-out tokens; default: a ``holdout`` fraction of ``acts``.
        layer, site, model_name: where the activations were read (recorded in the SAE's config).
        **options: any other ``TrainConfig`` field (``steps``, ``epochs``, ``lr``,
            ``batch_size``, ``seed``, ``holdout``, ``normalize``, ``k_aux``, ``aux_coef``,
            ``dead_tokens``, ``b_dec_init``, ``decay_frac``).

    Returns:
        ``(sae, metrics)``: a ``corrsteer.SAE`` (architecture ``"topk"``, weights for raw
        activations, ``meta`` holding ``metrics`` and ``config``) and the metrics dict
        (``explained_variance``, ``l0``, ``dead_fraction``, ``n_tokens`` on held-out
        tokens, plus ``train_tokens``, ``steps``, ``seconds``, ``scale``).
    """
    cfg = TrainConfig(d_sae=int(d_sae), k=int(k), **options)
    x_all = _as_tensor(acts)
    n, d_in = x_all.shape
    if cfg.d_sae < 1 or not 0 < cfg.k <= cfg.d_sae:
        raise ValueError(f"need d_sae >= 1 and 0 < k <= d_sae, got d_sae={cfg.d_sae}, k={cfg.k}")
    if cfg.b_dec_init not in ("mean", "median"):
        raise ValueError(f"b_dec_init must be 'mean' or 'median', got {cfg.b_dec_init!r}")
    gen = torch.Generator().manual_seed(cfg.seed)
    perm = torch.randperm(n, generator=gen)
    if eval_acts is None:
        n_eval = int(round(n * cfg.holdout))
        if n_eval < 1 or n - n_eval < 1:
            raise ValueError(f"{n} tokens with holdout={cfg.holdout} leave no train or held-out "
                             f"tokens; pass more tokens or eval_acts")
        x_eval, x = x_all[perm[:n_eval]], x_all[perm[n_eval:]]
    else:
        x_eval, x = _as_tensor(eval_acts), x_all[perm]
        if x_eval.shape[1] != d_in:
            raise ValueError(f"eval_acts has d_in={x_eval.shape[1]} but acts has {d_in}")
    n_train = x.shape[0]
    scale = float(1.0 / math.sqrt(float((x.double() ** 2).sum(1).mean()))) if cfg.normalize else 1.0
    x = x * scale
    bs = min(cfg.batch_size, n_train)
    steps = cfg.steps if cfg.steps is not None else max(1, int(cfg.epochs * n_train / bs))
    lr = cfg.lr if cfg.lr is not None else 2e-4 * (cfg.d_sae / 16384) ** -0.5
    k_aux = cfg.k_aux or min(cfg.d_sae // 2, 2 ** round(math.log2(max(d_in / 2, 1))))
    dead_tokens = cfg.dead_tokens or max(4 * bs, n_train // 4)

    W_dec = torch.randn(cfg.d_sae, d_in, generator=gen)
    W_dec /= torch.linalg.vector_norm(W_dec, dim=1, keepdim=True)
    W_enc = W_dec.t().clone().requires_grad_(True)
    W_dec.requires_grad_(True)
    b_init = x.mean(0) if cfg.b_dec_init == "mean" else _geometric_median(x[:65536])
    b_dec = b_init.clone().requires_grad_(True)
    b_enc = torch.zeros(cfg.d_sae, requires_grad=True)
    var = float(((x - x.mean(0)) ** 2).sum(1).mean())
    opt = torch.optim.Adam([W_enc, b_enc, W_dec, b_dec], lr=lr)
    decay_start = int(steps * (1 - cfg.decay_frac))
    since_fired = torch.zeros(cfg.d_sae, dtype=torch.long)

    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc=f"training SAE d_sae={cfg.d_sae} k={cfg.k}", disable=not progress)
    order = torch.randperm(n_train, generator=gen)
    pos = 0
    for step in bar:
        if pos + bs > n_train:
            order, pos = torch.randperm(n_train, generator=gen), 0
        xb = x[order[pos:pos + bs]]
        pos += bs
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (steps - step) / max(1, steps - decay_start))
        xc = xb - b_dec
        with torch.no_grad():
            pre = torch.addmm(b_enc, xc, W_enc)
            top_v, top_i = torch.topk(pre, cfg.k, dim=1)
            dead = since_fired >= dead_tokens
            n_dead = int(dead.sum())
            if n_dead and cfg.aux_coef > 0:
                ka = min(k_aux, n_dead)
                aux_v, aux_i = torch.topk(pre.masked_fill(~dead, -torch.inf), ka, dim=1)
        vals = _SelectedPre.apply(xc, W_enc, b_enc, top_i, top_v).clamp_min(0)
        x_hat = F.embedding_bag(top_i, W_dec, per_sample_weights=vals, mode="sum") + b_dec
        err = xb - x_hat
        mse = (err ** 2).sum(1).mean() / var
        loss = mse
        if n_dead and cfg.aux_coef > 0:
            a_vals = _SelectedPre.apply(xc, W_enc, b_enc, aux_i, aux_v).clamp_min(0)
            e_hat = F.embedding_bag(aux_i, W_dec, per_sample_weights=a_vals, mode="sum")
            aux = ((err.detach() - e_hat) ** 2).sum(1).mean() / var
            loss = loss + cfg.aux_coef * min(n_dead / k_aux, 1.0) * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            g = W_dec.grad
            g -= (g * W_dec).sum(1, keepdim=True) * W_dec
        opt.step()
        with torch.no_grad():
            W_dec /= torch.linalg.vector_norm(W_dec, dim=1, keepdim=True).clamp_min(1e-12)
            fired = torch.zeros(cfg.d_sae, dtype=torch.bool)
            fired[top_i[top_v > 0]] = True
            since_fired += bs
            since_fired[fired] = 0
        if progress and (step % 10 == 0 or step == steps - 1):
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", ev=f"{1 - float(mse.detach()):.3f}", dead=n_dead)
    seconds = time.perf_counter() - t0

    W_enc_r, b_enc_r, W_dec_r, b_dec_r = fold_to_raw(W_enc.detach(), b_enc.detach(),
                                                     W_dec.detach(), b_dec.detach(), scale)
    metrics = evaluate_sae(W_enc_r, b_enc_r, W_dec_r, b_dec_r, cfg.k, x_eval)
    metrics.update({"train_tokens": int(n_train), "steps": int(steps), "seconds": round(seconds, 2),
                    "scale": scale, "lr": lr, "k_aux": int(k_aux), "dead_tokens": int(dead_tokens)})
    sae = SAE(W_enc_r.numpy(), b_enc_r.numpy(), W_dec_r.numpy(), b_dec_r.numpy(), architecture="topk", k=cfg.k,
              apply_b_dec_to_input=False, layer=layer, site=site, model_name=model_name,
              meta={"metrics": dict(metrics), "config": asdict(cfg), "trainer": "corrsteer.sae.train"})
    logger.info("SAE d_sae=%d k=%d: EV %.4f, L0 %.1f, dead %.3f on %d held-out tokens (%.1f s)",
                cfg.d_sae, cfg.k, metrics["explained_variance"], metrics["l0"],
                metrics["dead_fraction"], metrics["n_tokens"], seconds)
    warn_if_degenerate(metrics, "the SAE just trained")
    return sae, metrics


DEAD_LIMIT = 0.5  # above this share of dead latents an SAE is reported as degenerate


def warn_if_degenerate(metrics: dict, what: str) -> bool:
    """Log a warning and return True when more than ``DEAD_LIMIT`` of the latents are dead.

    A high explained variance does not rescue such an SAE: when a few outlier tokens (an
    attention sink, massive activations) carry most of the variance, a handful of latents
    reconstruct them and the rest never fire.
    """
    dead = float(metrics.get("dead_fraction", 0.0))
    if dead <= DEAD_LIMIT:
        return False
    logger.warning("%s has %.0f%% dead latents (EV %.3f): it is degenerate, whatever its explained variance. "
                   "Either outlier tokens dominate its training activations (an attention sink or massive "
                   "activations; harvest drops each text's first position), or it has more latents than its %s "
                   "training tokens support (use fewer latents or more tokens; more optimizer steps on the same "
                   "tokens did not help when measured, README 'Our SAEs')",
                   what, 100 * dead, float(metrics.get("explained_variance", float("nan"))),
                   metrics.get("train_tokens", "few"))
    return True
