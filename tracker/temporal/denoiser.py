"""Temporal denoising keypoint model: this frame's RCN points + recent final points -> corrected.

The paper's denoising keypoint model (DKM) learns a face-shape prior over keypoint maps of one
image. This model extends it over time at a cost that suits every frame: its inputs are the
current RCN points and per-point confidences plus the previous two frames' *final* points,
all expressed in the current crop's normalised coordinates (the rotated, upright ROI: origin
at the crop centre, unit = crop side), and it outputs corrected points in the same frame.
A point the RCN lost (occluded, outside the frame, low confidence) is pulled to a position that
fits the rest of the face and its recent motion; confident points are left almost unchanged.

It is a small MLP (three layers, residual output initialised to the identity) trained in torch
by :mod:`tracker.training.temporal_train` and run in NumPy at inference: about 0.2 M multiply-adds, a few
tens of microseconds a face (``benchmarks/video_eval.py --cost`` prints the figure).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tracker.geometry import crop_affine, invert_affine, transform_points

N_POINTS = 68
TEMPORAL_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "temporal_dkm.npz"


@dataclass(frozen=True)
class TemporalConfig:
    """Shape of the temporal model (saved with its weights)."""

    n_points: int = N_POINTS
    hidden: int = 256
    layers: int = 2  # hidden layers
    # share of the learnt correction applied at run time. Run closed loop over whole videos,
    # the full correction over-trusts the model's own history (benchmarks/video_eval.py, val
    # stills: NME 5.39 % at 1.0, 5.07 % at 0.5, RCN alone 5.28 %); 0.5 keeps a margin.
    blend: float = 1.0
    # run-time gate: when the correction moves a face's points by more than this on average
    # (unit = crop side), the model's own history is taken to be wrong and this frame keeps the
    # RCN's points; 0 = no gate. On 16 clips of the training selection slice the mean move is
    # 0.0017 (p99.9 0.017, max 0.038; benchmarks/video_eval.py --faces train-select).
    max_correction: float = 0.05

    @property
    def n_inputs(self) -> int:
        # current points, confidence, previous points, previous velocity, "has previous" flag
        return self.n_points * 2 + self.n_points + self.n_points * 2 * 2 + 1


def features(cur: np.ndarray, conf: np.ndarray, prev1: np.ndarray, prev2: np.ndarray,
             has_prev: np.ndarray) -> np.ndarray:
    """Model input ``(N, n_inputs)`` from normalised points ``(N, K, 2)`` and confidence ``(N, K)``.

    ``prev1``/``prev2`` are the final points one and two frames back in the current crop's
    coordinates; where a face has no history pass ``cur`` for both and ``has_prev`` 0.
    """
    n = cur.shape[0]
    return np.concatenate(
        [
            cur.reshape(n, -1),
            conf.reshape(n, -1),
            (prev1 - cur).reshape(n, -1),
            (prev1 - prev2).reshape(n, -1),
            np.asarray(has_prev, np.float32).reshape(n, 1),
        ],
        axis=1,
    ).astype(np.float32)


class TemporalDenoiser:
    """NumPy inference of the temporal model; ``__call__`` works on normalised crop points."""

    def __init__(self, config: TemporalConfig, weights: list[np.ndarray],
                 meta: dict[str, Any] | None = None) -> None:
        self.config = config
        self.weights = [np.ascontiguousarray(w, dtype=np.float32) for w in weights]
        expected = 2 * (config.layers + 1)
        if len(self.weights) != expected:
            raise ValueError(f"temporal model needs {expected} arrays, got {len(self.weights)}")
        if self.weights[0].shape != (config.n_inputs, config.hidden):
            raise ValueError(f"temporal model input layer has shape {self.weights[0].shape}")
        self.meta = meta or {}
        self._features = np.empty((1, config.n_inputs), np.float32)  # refine()'s input row

    def __call__(self, cur: np.ndarray, conf: np.ndarray, prev1: np.ndarray, prev2: np.ndarray,
                 has_prev: np.ndarray) -> np.ndarray:
        """Corrected points ``(N, K, 2)`` (same normalised coordinates as ``cur``)."""
        delta = self._delta(features(cur, conf, prev1, prev2, has_prev))
        return (cur.reshape(cur.shape[0], -1) + delta).reshape(cur.shape).astype(np.float32)

    def refine(self, points: np.ndarray, confidence: np.ndarray, history: list[np.ndarray],
               center: tuple[float, float], side: float, angle: float) -> np.ndarray:
        """Correct one face's frame-pixel ``points`` given its final points in earlier frames.

        ``history`` holds up to two earlier final point sets (most recent first), in frame
        pixels; ``center``/``side``/``angle`` describe this frame's crop.
        """
        # the same arithmetic as __call__ on one face, with fewer array operations: the point
        # sets go through the crop affine together and the features fill one buffer
        to_crop = crop_affine(center, side, angle, 1)
        k = len(points)
        sets = [points, *history[:2]]
        crop = transform_points(to_crop, np.concatenate(sets) if len(sets) > 1 else points)
        cur = crop[:k]
        prev1 = crop[k:2 * k] if len(sets) > 1 else cur
        prev2 = crop[2 * k:3 * k] if len(sets) > 2 else prev1
        f = self._features
        f[0, :2 * k] = cur.ravel()
        f[0, 2 * k:3 * k] = confidence
        np.subtract(prev1, cur, out=f[0, 3 * k:5 * k].reshape(k, 2))
        np.subtract(prev1, prev2, out=f[0, 5 * k:7 * k].reshape(k, 2))
        f[0, 7 * k] = 1.0 if len(sets) > 1 else 0.0
        fixed = self._correct(cur, f)
        if fixed is None:
            return np.asarray(points, np.float32)
        return transform_points(invert_affine(to_crop), fixed)

    def _correct(self, cur: np.ndarray, h: np.ndarray) -> np.ndarray | None:
        """``cur`` (K, 2) plus the model's correction for the feature row ``h``; None when the
        correction is larger than the gate (``config.max_correction``)."""
        delta = self._delta(h)
        gate = self.config.max_correction
        if gate > 0.0 and _mean_move(delta) > gate:
            return None
        return (cur.reshape(1, -1) + delta).reshape(cur.shape).astype(np.float32)

    def _delta(self, h: np.ndarray) -> np.ndarray:
        """The MLP on feature rows ``h`` (N, F): the blended correction (N, 2K); ``h`` is
        left as it was."""
        w = self.weights
        for i in range(0, len(w) - 2, 2):
            h = h @ w[i]
            h += w[i + 1]
            np.maximum(h, 0.0, out=h)
        delta = h @ w[-2] + w[-1]
        if self.config.blend != 1.0:
            delta *= self.config.blend
        return delta


def _mean_move(delta: np.ndarray) -> float:
    """Mean length of the per-point moves in one face's correction row ``(1, 2K)``."""
    return float(np.linalg.norm(delta.reshape(-1, 2), axis=1).mean())


def save_temporal(path: str | Path, config: TemporalConfig, weights: list[np.ndarray],
                  meta: dict[str, Any]) -> None:
    """Weights to ``path`` (.npz, with the config inside) and ``meta`` to the JSON sidecar."""
    path = Path(path)
    arrays = {f"w{i}": np.asarray(w, np.float32) for i, w in enumerate(weights)}
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, config=np.array(json.dumps(asdict(config))), **arrays)
    tmp.replace(path)
    sidecar = {"config": asdict(config), **meta}
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")


def load_temporal(path: str | Path | None = None) -> TemporalDenoiser:
    """Load a temporal model saved by :func:`save_temporal` (default: the shipped weights)."""
    path = Path(path) if path else TEMPORAL_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"temporal model weights not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            config = TemporalConfig(**json.loads(str(z["config"])))
            n = sum(1 for k in z.files if k.startswith("w"))
            weights = [z[f"w{i}"] for i in range(n)]
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"cannot load temporal model {path}: {exc}") from None
    side = path.with_suffix(".json")
    meta = json.loads(side.read_text()) if side.exists() else {}
    return TemporalDenoiser(config, weights, meta)
