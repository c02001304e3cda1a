"""The state that controls and baselines need, filled in CorrSteer's own collection pass.

``collect(..., controls=True)`` keeps, per layer and next to the CorrSteer accumulator,
a :class:`ControlState`:

- ``shuffled``: a ``CorrelationAccumulator`` fed the same pooled activations with the
  rewards **permuted within each checkpoint window** (``checkpoint_every`` samples, 256
  by default) by ``numpy.random.default_rng([seed, window_start])``. Each sample is paired
  with another sample's reward, so any feature-reward link is broken and the result is a
  valid null; only the between-window part of the covariance survives, about
  ``1 / window`` of the real r. The window's pooled activations are buffered until its
  end (``window × d_sae × 4`` bytes per layer), which is also where checkpoints fall, so
  a resumed run permutes exactly like an uninterrupted one.
- ``pos`` / ``neg``: accumulators fed only the rewarded / unrewarded samples: exact
  per-class means, centred second moments and activity counts (Fisher scores).
- ``resid``: an accumulator of width ``d_model`` fed, per sample, the residual stream
  mean-pooled over the generation positions, with the reward: its class means give the
  diff-in-means (CAA-style) vector. The residual comes from a second capture in the same
  generation pass with an identity pseudo-SAE ``W_enc = [I, −I]``, ReLU, mean pooling:
  ``pooled relu(x) − pooled relu(−x) = mean_t x_t`` exactly (each product is with 1 or 0).

Memory per layer: four accumulators (``3·6·8·d_sae + 6·8·d_model`` bytes) plus the window
buffer. The selections built from this state live in ``corrsteer.baselines``.

:func:`run_controls` is the experiment: collect once (all of the state above in the
same pass), select CorrSteer and every control/baseline, generate the unsteered test
split once, each steered condition on the same samples, and write one table
(``controls.md``, ``controls.json``, ``figures/deltas.png``) of all of them.

Example:
    >>> rows = run_controls(RunConfig(task="bbq_ambig", n_train=300, n_test=150))   # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from corrsteer.correlation import CorrelationAccumulator
from corrsteer.errors import CorrsteerError

log = logging.getLogger(__name__)

KINDS = ("shuffled", "pos", "neg", "resid")


def identity_sae(d_model: int, layer: int, site: str = "resid_post") -> Any:
    """An exact identity pseudo-SAE: ``f = relu([x, −x])`` (d_sae = 2·d_model), ``f @ W_dec = x``."""
    from corrsteer.sae.model import SAE

    eye = np.eye(d_model, dtype=np.float32)
    W_enc = np.ascontiguousarray(np.concatenate([eye, -eye], axis=1))  # (d_model, 2 d_model)
    W_dec = np.ascontiguousarray(np.concatenate([eye, -eye], axis=0))  # (2 d_model, d_model)
    return SAE(W_enc, np.zeros(2 * d_model, np.float32), W_dec, np.zeros(d_model, np.float32),
               architecture="relu", layer=int(layer), site=site, meta={"identity": True})


def residual_means(pooled: np.ndarray) -> np.ndarray:
    """(n_seq, d_model) mean residual from the identity SAE's mean-pooled (n_seq, 2·d_model) output."""
    d = pooled.shape[1] // 2
    return pooled[:, :d] - pooled[:, d:]


class ControlState:
    """Per-layer extra accumulators of a controls collection (see the module docstring).

    Args:
        d_sae: layer -> the SAE's width.
        d_model: the model's residual width.
        seed: seed of the reward permutations.
    """

    def __init__(self, d_sae: Mapping[int, int], d_model: int, seed: int = 0) -> None:
        self.seed = int(seed)
        self.d_model = int(d_model)
        self.shuffled = {l: CorrelationAccumulator(int(d)) for l, d in sorted(d_sae.items())}
        self.pos = {l: CorrelationAccumulator(int(d)) for l, d in sorted(d_sae.items())}
        self.neg = {l: CorrelationAccumulator(int(d)) for l, d in sorted(d_sae.items())}
        self.resid = {l: CorrelationAccumulator(self.d_model) for l in sorted(d_sae)}
        self.offset = 0  # samples folded into ``shuffled`` (windows flushed so far)
        self._buffer: list[tuple[dict[int, np.ndarray], np.ndarray]] = []

    @property
    def layers(self) -> list[int]:
        return list(self.shuffled)

    def update(self, z: Mapping[int, np.ndarray], resid: Mapping[int, np.ndarray], y: np.ndarray) -> None:
        """Fold in one batch.

        Args:
            z: layer -> (n_seq, d_sae) pooled SAE activations (as for the CorrSteer accumulator).
            resid: layer -> (n_seq, d_model) mean residual per sample (:func:`residual_means`).
            y: (n_seq,) 0/1 rewards.
        """
        y = np.asarray(y, dtype=np.float64)
        pos = y == 1
        for l in self.layers:
            if resid[l].shape != (len(y), self.d_model):
                raise CorrsteerError(f"layer {l}: residual means of shape {resid[l].shape}, expected "
                                     f"({len(y)}, {self.d_model})")
            if pos.any():
                self.pos[l].update(z[l][pos], np.zeros(int(pos.sum())))
            if (~pos).any():
                self.neg[l].update(z[l][~pos], np.zeros(int((~pos).sum())))
            self.resid[l].update(resid[l], y)
        self._buffer.append(({l: np.array(z[l], dtype=np.float32) for l in self.layers}, y.copy()))

    def flush(self) -> None:
        """End a window: permute its rewards (seeded by its start) and fold it into ``shuffled``."""
        if not self._buffer:
            return
        y = np.concatenate([b[1] for b in self._buffer])
        perm = np.random.default_rng([self.seed, self.offset]).permutation(len(y))
        for l in self.layers:
            self.shuffled[l].update(np.concatenate([b[0][l] for b in self._buffer]), y[perm])
        self.offset += len(y)
        self._buffer.clear()

    @property
    def pending(self) -> int:
        """Samples buffered in the open window (0 right after :meth:`flush`)."""
        return sum(len(b[1]) for b in self._buffer)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """``{name: uint8 array}`` for ``numpy.savez`` (flushed state only)."""
        if self._buffer:
            raise CorrsteerError("ControlState.to_arrays() with an open window; call flush() first")
        out = {"control_meta": np.frombuffer(json.dumps({"seed": self.seed, "offset": self.offset,
                                                          "d_model": self.d_model}).encode(), np.uint8)}
        for kind in KINDS:
            for l, acc in getattr(self, kind).items():
                out[f"control_{kind}_{l}"] = np.frombuffer(acc.to_bytes(), np.uint8)
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> ControlState | None:
        """Inverse of :meth:`to_arrays`; None when ``arrays`` hold no control state."""
        if "control_meta" not in arrays:
            return None
        meta = json.loads(bytes(arrays["control_meta"]).decode())
        self = cls({}, meta["d_model"], meta["seed"])
        self.offset = int(meta["offset"])
        for name in sorted(arrays):
            parts = name.split("_")
            if len(parts) == 3 and parts[0] == "control" and parts[1] in KINDS:
                getattr(self, parts[1])[int(parts[2])] = CorrelationAccumulator.from_bytes(bytes(arrays[name]))
        for kind in KINDS:
            setattr(self, kind, dict(sorted(getattr(self, kind).items())))
        if not (set(self.shuffled) == set(self.pos) == set(self.neg) == set(self.resid)):
            raise CorrsteerError("the control state in the checkpoint lacks some layers; collect again")
        return self

    def to_bytes(self) -> bytes:
        """All of the state as one ``.npz`` blob."""
        buf = io.BytesIO()
        np.savez(buf, **self.to_arrays())
        return buf.getvalue()


# ----------------------------------------------------------------------- the experiment

DEFAULT_METHODS = ("random", "shuffled", "negative", "diff-in-means", "mi", "fisher",
                   "scale-0.5", "scale-1.5", "scale-2")
CONTROLS_JSON = "controls.json"
CONTROLS_MD = "controls.md"


def describe(sel: Any) -> str:
    """What a selection steers, in one cell: ``L3 +#12 (c=+1.9); L6 −#40 (c=−2.2)`` or the vectors' layers."""
    if sel.features:
        return "; ".join(f"L{f.layer} {'+' if f.sign > 0 else '−'}#{f.index} (c={f.coefficient:+.3g})"
                         for f in sel.features)
    if sel.vectors:
        norms = sel.meta.get("norms", {})
        return "; ".join(f"L{l} vector (norm {norms.get(str(l), {}).get('steered', float('nan')):.3g})"
                         for l in sorted(sel.vectors))
    return f"nothing ({sel.note or 'no feature selected'})"


def run_controls(cfg: Any, methods: Sequence[str] = DEFAULT_METHODS, *, model: Any = None, tokenizer: Any = None,
                 task: Any = None, saes: Mapping[int, Any] | None = None) -> dict[str, Any]:
    """CorrSteer against its controls and baselines on one task: one collection, one table.

    Args:
        cfg: a ``RunConfig`` (task, model, SAEs, counts, mode, scale, seed, out); its
            ``method`` is ignored (every method runs).
        methods: the methods besides CorrSteer (``corrsteer.baselines``; ``scale-S`` too).
        model, tokenizer, task, saes: already-loaded objects to use instead of loading.

    Returns:
        The ``controls.json`` dict: ``rows`` ``{method: compare() dict + features, layers,
        note, selection}``, ``timings``, ``config``, ``report`` (path of controls.md).
    """
    from corrsteer import pipeline
    from corrsteer.baselines import select_method
    from corrsteer.config import check_method
    from corrsteer.evaluation import compare, write_generations_jsonl
    from corrsteer.report import write_comparison_report
    from corrsteer.selection import save_selection

    methods = [check_method(m) for m in methods if m != "corrsteer"]
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods {list(methods)} lists a method twice")
    cfg.controls = True
    cfg.check()
    out = Path(cfg.out_dir())
    t0 = time.perf_counter()
    res = pipeline.load_resources(cfg, model=model, tokenizer=tokenizer, task=task, saes=saes)
    t1 = time.perf_counter()
    col = pipeline.stage_collect(cfg, res)
    t2 = time.perf_counter()
    validate = None
    if cfg.mode in ("global", "pruned"):
        validate = pipeline.make_validator(res, res.task.samples("validation", cfg.n_val, seed=cfg.seed), cfg)
    sels = {"corrsteer": select_method("corrsteer", col, res.saes, cfg.mode, validate, cfg.top_k, cfg.scale,
                                       cfg.seed)}
    for m in methods:
        sels[m] = select_method(m, col, res.saes, cfg.mode, validate, cfg.top_k, cfg.scale, cfg.seed,
                                reference=sels["corrsteer"])
    for name, sel in sels.items():
        sel.meta.update(task=res.task.name, n_train=col.n)
        save_selection(sel, out / "methods" / name / "selection")
    t3 = time.perf_counter()
    samples = res.task.samples("test", cfg.n_test, seed=cfg.seed)
    if not samples:
        raise ValueError("n_test is 0: the controls table needs test samples (--n-test)")
    gen = dict(batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens, progress=cfg.progress)
    base = pipeline.generate_records(res, samples, None, desc="test unsteered", condition="baseline", **gen)
    write_generations_jsonl(out / "generations_baseline.jsonl", base)
    rows: dict[str, Any] = {}
    for name, sel in sels.items():
        steered = (pipeline.generate_records(res, samples, sel.interventions(), desc=f"test {name}",
                                             condition="steered", **gen)
                   if sel.vectors else [dict(r, condition="steered") for r in base])
        write_generations_jsonl(out / "methods" / name / "generations.jsonl", base + steered)
        row = compare([r["reward"] for r in base], [r["reward"] for r in steered], [r["category"] for r in base],
                      n_boot=cfg.n_boot, seed=cfg.seed)
        row.update(method=name, features=[{"layer": f.layer, "index": f.index, "sign": "+" if f.sign > 0 else "-",
                                           "r": f.r, "coefficient": f.coefficient} for f in sel.features],
                   steered_layers=sorted(sel.vectors), steers=describe(sel), note=sel.note,
                   metrics=pipeline._task_metrics(res.task, base, steered), selection_meta=sel.meta)
        rows[name] = row
        log.info("controls: %s delta %+.4f", name, row["delta"])
    t4 = time.perf_counter()
    timings = {"load_s": t1 - t0, "collect_s": t2 - t1, "select_s": t3 - t2, "eval_s": t4 - t3,
               "total_s": time.perf_counter() - t0}
    doc = {"task": res.task.name, "model": pipeline.model_id(res.model), "sae": cfg.sae, "mode": cfg.mode,
           "seed": cfg.seed, "n_train": col.n, "n_test": len(samples), "collection_score": col.score,
           "rows": rows, "timings": timings, "config": cfg.to_dict()}
    pipeline._write_json(out / CONTROLS_JSON, doc)
    title = (f"CorrSteer vs controls and baselines: {res.task.name} · {doc['model']} · mode {cfg.mode} · "
             f"n_train {col.n} · n_test {len(samples)}")
    path = write_comparison_report(out, rows, title=title, filename=CONTROLS_MD)
    lines = ["", "## What each method steers", "", "| method | steers |", "|---|---|"]
    lines += [f"| {name} | {r['steers'].replace('|', '/')} |" for name, r in rows.items()]
    lines += ["", f"Timings: collect {timings['collect_s']:.0f} s, select {timings['select_s']:.0f} s, "
              f"evaluate {timings['eval_s']:.0f} s, total {timings['total_s']:.0f} s.", ""]
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
    doc["report"] = str(path)
    return doc
