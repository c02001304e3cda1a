"""The state that controls and baselines need, filled in CorrSteer's own collection pass.

``collect(..., controls=True)`` keeps, per layer and next to the CorrSteer accumulator,
a :class:`ControlState`:

- ``shuffled[d]``, one per draw ``d`` of ``draws``: a ``CorrelationAccumulator`` fed the
  same pooled activations with the rewards **permuted within each checkpoint window**
  (``checkpoint_every`` samples, 256 by default) by
  ``numpy.random.default_rng([seed, window_start])`` for draw 0 and
  ``default_rng([seed, window_start, d])`` for draw d > 0. Each sample is paired with
  another sample's reward, so any feature-reward link is broken and the result is a valid
  null; only the between-window part of the covariance survives, about ``1 / window`` of the
  real r. One draw is not a control (it can look like an effect, or hide one): several give
  the spread. The window's pooled activations are buffered until its end
  (``window × d_sae × 4`` bytes per layer), which is also where checkpoints fall, so a
  resumed run permutes exactly like an uninterrupted one.
- ``pos`` / ``neg``: accumulators fed only the rewarded / unrewarded samples: exact
  per-class means, centred second moments and activity counts (Fisher scores).
- ``resid``: an accumulator of width ``d_model`` fed, per sample, the residual stream
  mean-pooled over the generation positions, with the reward: its class means give the
  diff-in-means (CAA-style) vector. The residual comes from a second capture in the same
  generation pass with an identity pseudo-SAE ``W_enc = [I, −I]``, ReLU, mean pooling:
  ``pooled relu(x) − pooled relu(−x) = mean_t x_t`` exactly (each product is with 1 or 0).

Memory per layer: ``draws + 2`` accumulators of width d_sae and one of width d_model (each
``6·8`` bytes per feature) plus the window buffer. The selections built from this state live in
:mod:`corrsteer.method.baselines`.

The experiment that compares them all is :func:`corrsteer.studies.controls.run_controls`.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from corrsteer.core import CorrelationAccumulator
from corrsteer.errors import CorrsteerError
from corrsteer.sae import SAE

log = logging.getLogger(__name__)

KINDS = ("pos", "neg", "resid")  # one accumulator per layer; "shuffled" has one per draw


def identity_sae(d_model: int, layer: int, site: str = "resid_post") -> Any:
    """An exact identity pseudo-SAE: ``f = relu([x, −x])`` (d_sae = 2·d_model), ``f @ W_dec = x``."""
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
        draws: how many independent permutations (shuffled-reward controls) to keep.
    """

    def __init__(self, d_sae: Mapping[int, int], d_model: int, seed: int = 0, draws: int = 1) -> None:
        if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
            raise ValueError(f"draws={draws!r} must be a positive integer")
        self.seed = int(seed)
        self.d_model = int(d_model)
        self.shuffled: list[dict[int, Any]] = [{l: CorrelationAccumulator(int(d)) for l, d in sorted(d_sae.items())}
                                               for _ in range(draws)]
        self.pos = {l: CorrelationAccumulator(int(d)) for l, d in sorted(d_sae.items())}
        self.neg = {l: CorrelationAccumulator(int(d)) for l, d in sorted(d_sae.items())}
        self.resid = {l: CorrelationAccumulator(self.d_model) for l in sorted(d_sae)}
        self.offset = 0  # samples folded into ``shuffled`` (windows flushed so far)
        self._buffer: list[tuple[dict[int, np.ndarray], np.ndarray]] = []

    @property
    def layers(self) -> list[int]:
        return list(self.pos)

    @property
    def draws(self) -> int:
        """Number of shuffled-reward draws."""
        return len(self.shuffled)

    def _permutation(self, n: int, draw: int) -> np.ndarray:
        key = [self.seed, self.offset] if draw == 0 else [self.seed, self.offset, draw]
        return np.random.default_rng(key).permutation(n)

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
        for l in self.layers:
            z = np.concatenate([b[0][l] for b in self._buffer])
            for draw, accs in enumerate(self.shuffled):
                accs[l].update(z, y[self._permutation(len(y), draw)])
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
        for draw, accs in enumerate(self.shuffled):  # draw 0 keeps the name it had before draws existed
            for l, acc in accs.items():
                out[f"control_shuffled{draw or ''}_{l}"] = np.frombuffer(acc.to_bytes(), np.uint8)
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> ControlState | None:
        """Inverse of :meth:`to_arrays`; None when ``arrays`` hold no control state."""
        if "control_meta" not in arrays:
            return None
        meta = json.loads(bytes(arrays["control_meta"]).decode())
        self = cls({}, meta["d_model"], meta["seed"])
        self.offset = int(meta["offset"])
        shuffled: dict[int, dict[int, Any]] = {}
        for name in sorted(arrays):
            parts = name.split("_")
            if len(parts) != 3 or parts[0] != "control":
                continue
            acc = CorrelationAccumulator.from_bytes(bytes(arrays[name]))
            if parts[1] in KINDS:
                getattr(self, parts[1])[int(parts[2])] = acc
            elif parts[1].startswith("shuffled"):
                shuffled.setdefault(int(parts[1][len("shuffled"):] or 0), {})[int(parts[2])] = acc
        for kind in KINDS:
            setattr(self, kind, dict(sorted(getattr(self, kind).items())))
        self.shuffled = [dict(sorted(shuffled[d].items())) for d in sorted(shuffled)]
        if sorted(shuffled) != list(range(len(shuffled))) or not self.shuffled or \
                not all(set(accs) == set(self.pos) == set(self.neg) == set(self.resid) for accs in self.shuffled):
            raise CorrsteerError("the control state in the checkpoint lacks some draws or layers; collect again")
        return self

    def to_bytes(self) -> bytes:
        """All of the state as one ``.npz`` blob."""
        buf = io.BytesIO()
        np.savez(buf, **self.to_arrays())
        return buf.getvalue()
