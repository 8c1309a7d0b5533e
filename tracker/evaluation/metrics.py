"""Landmark accuracy: NME, failure rate, CED curve and its AUC (300-W conventions).

NME is normalised by the outer-eye-corner ("inter-ocular") distance of the ground truth:
0-based points 36 and 45 of the iBUG 68-point order (``tracker.face68.OUTER_EYE_CORNERS``).
A failure is an image with NME strictly greater than the threshold (an NME of exactly 0.10 is
not a failure). The CED at error e is the fraction of images with NME <= e; its AUC up to the
threshold is the exact integral of that step function divided by the threshold, so it lies in
[0, 1].

Per-region NME averages the point errors of one region only (still over the inter-ocular
distance); the signed offset is the mean of ``pred - gt`` in x and y over the inter-ocular
distance, so a constant shift of every point by +2 px in x on a face with a 100 px inter-ocular
distance gives offset (0.02, 0.0): a labelling-convention bias that NME alone hides.
"""

from __future__ import annotations

import numpy as np

from tracker.face68 import BROWS, EYES, JAW, MOUTH, NOSE, OUTER_EYE_CORNERS

__all__ = [
    "EVAL_REGIONS",
    "auc",
    "bias_report",
    "ced_curve",
    "failure_rate",
    "inter_ocular",
    "nme",
    "region_nme",
    "signed_offset",
    "summarize",
]

EVAL_REGIONS: dict[str, range] = {"jaw": JAW, "brows": BROWS, "nose": NOSE, "eyes": EYES,
                                  "mouth": MOUTH}
"""The five regions accuracy is reported for (``tracker.face68``'s ranges; both sides together)."""


def _as_batch(points: np.ndarray, name: str) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3 or p.shape[2] != 2 or p.shape[1] <= max(OUTER_EYE_CORNERS):
        raise ValueError(f"{name}: expected points of shape (N, 68, 2) or (68, 2), got {p.shape}")
    return p


def inter_ocular(gt: np.ndarray) -> np.ndarray:
    """Outer-eye-corner distance per image, shape (N,), for ground truth (N, 68, 2)."""
    g = _as_batch(gt, "gt")
    a, b = OUTER_EYE_CORNERS
    return np.linalg.norm(g[:, a] - g[:, b], axis=1)


def nme(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-image mean point error over the inter-ocular distance, shape (N,).

    Accepts (N, 68, 2) or a single (68, 2) pair. Raises ValueError on mismatched shapes or a
    zero inter-ocular distance.
    """
    p, g, iod = _pair(pred, gt)
    return np.linalg.norm(p - g, axis=2).mean(axis=1) / iod


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = _as_batch(pred, "pred")
    g = _as_batch(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred {p.shape} and gt {g.shape} differ in shape")
    iod = inter_ocular(g)
    if np.any(~(iod > 0)):
        raise ValueError("ground truth with zero inter-ocular distance")
    return p, g, iod


def region_nme(pred: np.ndarray, gt: np.ndarray, points: range | list[int]) -> np.ndarray:
    """Per-image NME over the given point indices only (inter-ocular normalised), shape (N,)."""
    p, g, iod = _pair(pred, gt)
    idx = list(points)
    return np.linalg.norm(p[:, idx] - g[:, idx], axis=2).mean(axis=1) / iod


def signed_offset(pred: np.ndarray, gt: np.ndarray,
                  points: range | list[int] | None = None) -> np.ndarray:
    """Per-image mean ``pred - gt`` over the points (all when None) / inter-ocular, shape (N, 2).

    Positive x is to the image's right, positive y downwards.
    """
    p, g, iod = _pair(pred, gt)
    idx = slice(None) if points is None else list(points)
    return (p[:, idx] - g[:, idx]).mean(axis=1) / iod[:, None]


def bias_report(pred: np.ndarray, gt: np.ndarray) -> dict[str, object]:
    """Mean signed offset overall and, with the NME, per :data:`EVAL_REGIONS` region.

    ``{"offset_x", "offset_y", "regions": {name: {"nme_mean", "offset_x", "offset_y"}}}`` as
    fractions of the inter-ocular distance, averaged over the images given.
    """
    off = signed_offset(pred, gt).mean(axis=0)
    regions = {}
    for name, idx in EVAL_REGIONS.items():
        r = signed_offset(pred, gt, idx).mean(axis=0)
        regions[name] = {"nme_mean": float(region_nme(pred, gt, idx).mean()),
                         "offset_x": float(r[0]), "offset_y": float(r[1])}
    return {"offset_x": float(off[0]), "offset_y": float(off[1]), "regions": regions}


def _checked(nmes: np.ndarray) -> np.ndarray:
    e = np.asarray(nmes, dtype=np.float64).reshape(-1)
    if e.size == 0:
        raise ValueError("no NME values")
    if np.isnan(e).any() or (e < 0).any():
        raise ValueError("NME values must be >= 0 and not NaN (use inf for a lost face)")
    return e


def failure_rate(nmes: np.ndarray, threshold: float = 0.10) -> float:
    """Fraction of images with NME > threshold (strict; equal to the threshold passes)."""
    return float(np.mean(_checked(nmes) > threshold))


def auc(nmes: np.ndarray, threshold: float = 0.10) -> float:
    """Area under the CED from 0 to ``threshold``, divided by ``threshold`` (in [0, 1]).

    Exact: each image contributes ``max(0, threshold - nme)``, the length of error levels
    at which it counts as passed.
    """
    e = _checked(nmes)
    return float(np.mean(np.clip(threshold - e, 0.0, None)) / threshold)


def ced_curve(nmes: np.ndarray, threshold: float = 0.10) -> tuple[np.ndarray, np.ndarray]:
    """Breakpoints of the CED step function on [0, threshold].

    Returns ``(errors, fractions)``: the curve is ``fractions[i]`` on
    ``[errors[i], errors[i+1])``; ``errors`` starts at 0 and ends at ``threshold``.
    """
    e = np.sort(_checked(nmes))
    inside = e[e <= threshold]
    xs = np.unique(np.concatenate([[0.0], inside, [threshold]]))
    ys = np.searchsorted(e, xs, side="right") / e.size
    return xs, ys


def summarize(nmes: np.ndarray) -> dict[str, float | int]:
    """``{n, nme_mean, nme_median, fr_010, auc_010}`` as plain Python numbers (threshold 0.10)."""
    e = _checked(nmes)
    return {
        "n": int(e.size),
        "nme_mean": float(np.mean(e)),
        "nme_median": float(np.median(e)),
        "fr_010": failure_rate(e, 0.10),
        "auc_010": auc(e, 0.10),
    }
