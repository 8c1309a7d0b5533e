"""Expression signals from 68 landmarks: eye openness, blinks, mouth and brows.

Every signal is a ratio of two distances on the same face, so it does not depend on the face's
size or distance from the camera, and each is mapped to 0-1 by constants measured on labelled
photos (``python benchmarks/expression_eval.py``; README "Expression signals"):

* ``eye_open``: the eye aspect ratio (Soukupova and Cech, 2016), lid-to-lid height over the
  eye's corner-to-corner width, divided by that eye's usual open ratio and mapped from
  :data:`EAR_CLOSED_RATIO` (0) to 1. The usual ratio is :data:`EAR_OPEN` for a still image; in
  a video it is learnt per face id (:class:`EyeLevels`), since people's eyes differ more than
  the shipped model's lids move on a blink;
* ``mouth_open``: the inner-lip gap (mean of points 61-67, 62-66, 63-65) over the inter-ocular
  distance (outer eye corners), 0 = lips together, 1 = :data:`MOUTH_OPEN_FULL`;
* ``mouth_wide``: the mouth-corner distance (48-54) over the inter-ocular distance, from
  :data:`MOUTH_WIDE_NEUTRAL` (0) to :data:`MOUTH_WIDE_FULL` (1);
* ``brow_raise``: the brow's height above its eye (mean brow point to mean eye point, measured
  across the eye line, so head roll does not change it) over the inter-ocular distance, from
  :data:`BROW_NEUTRAL` (0) to :data:`BROW_FULL` (1).

``left``/``right`` are the subject's (:mod:`tracker.face68`). A blink is an event: true on the
frame an eye's openness falls below :data:`BLINK_CLOSED` after having been above
:data:`BLINK_OPEN` (:class:`BlinkDetector`, per face id).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from tracker.face68 import (
    LEFT_BROW,
    LEFT_EYE,
    LEFT_MOUTH_CORNER,
    N_POINTS,
    OUTER_EYE_CORNERS,
    RIGHT_BROW,
    RIGHT_EYE,
    RIGHT_MOUTH_CORNER,
)
from tracker.types import Expression

# Set from benchmarks/expression_eval.py (README "Expression signals"): the eye constants from
# the model's predictions (it does not close the lids: 0.211 on labelled closed eyes, 0.273 on
# open ones, wild68/val), the others from the labelled points (median = 0, ~99th percentile = 1).
EAR_OPEN = 0.27  # the usual eye aspect ratio of an open eye (predicted; stills)
EAR_CLOSED_RATIO = 0.77  # a closed eye's predicted ratio over its open one (eye_open 0)
LEVEL_UP, LEVEL_DOWN = 0.1, 0.005  # per frame: how fast a face's usual open ratio rises / falls
MOUTH_OPEN_FULL = 0.25  # inner-lip gap / IOD read as a fully open mouth
MOUTH_WIDE_NEUTRAL = 0.60  # mouth width / IOD of a neutral mouth (mouth_wide 0)
MOUTH_WIDE_FULL = 0.80  # mouth width / IOD of a wide smile (mouth_wide 1)
BROW_NEUTRAL = 0.24  # brow height over the eye / IOD of a neutral brow (brow_raise 0)
BROW_FULL = 0.35  # brow height over the eye / IOD of a raised brow (brow_raise 1)
BLINK_CLOSED = 0.35  # eye_open below this, after being above BLINK_OPEN, is a blink
BLINK_OPEN = 0.6  # eye_open above this re-arms the blink detector

INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))
"""Upper and lower inner-lip points facing each other."""


def _dist(points: np.ndarray, a: int, b: int) -> float:
    return float(np.hypot(*(points[a] - points[b])))


def eye_aspect_ratio(points: np.ndarray, eye: range) -> float:
    """Lid-to-lid height over corner-to-corner width of one eye (NaN when degenerate)."""
    c0, u1, u2, c1, l2, l1 = eye  # corner, upper lid x2, corner, lower lid x2 (iBUG order)
    width = _dist(points, c0, c1)
    height = 0.5 * (_dist(points, u1, l1) + _dist(points, u2, l2))
    return height / width if width > 0 else math.nan


def raw_measures(points: np.ndarray) -> dict[str, float]:
    """The unmapped ratios behind every signal, for a ``(68, 2)`` point set (NaN if unknown):
    ``ear_left/right``, ``mouth_gap``, ``mouth_width``, ``brow_left/right``."""
    p = np.asarray(points, np.float64)
    if p.shape != (N_POINTS, 2):
        raise ValueError(f"expected (68, 2) points, got {p.shape}")
    a, b = OUTER_EYE_CORNERS
    axis = p[b] - p[a]
    iod = float(np.hypot(*axis))
    if not iod > 0:
        iod = math.nan
    normal = np.array([axis[1], -axis[0]]) / iod  # points up the face (image y grows down)

    def brow(brow_idx: range, eye_idx: range) -> float:
        rise = p[list(brow_idx)].mean(axis=0) - p[list(eye_idx)].mean(axis=0)
        return float(rise @ normal) / iod

    gap = np.mean([_dist(p, u, lo) for u, lo in INNER_LIP_PAIRS])
    return {
        "ear_left": eye_aspect_ratio(p, LEFT_EYE),
        "ear_right": eye_aspect_ratio(p, RIGHT_EYE),
        "mouth_gap": float(gap) / iod,
        "mouth_width": _dist(p, RIGHT_MOUTH_CORNER, LEFT_MOUTH_CORNER) / iod,
        "brow_left": brow(LEFT_BROW, LEFT_EYE),
        "brow_right": brow(RIGHT_BROW, RIGHT_EYE),
    }


def _unit(value: float, lo: float, hi: float) -> float:
    """``value`` mapped linearly from ``lo`` (0) to ``hi`` (1), clipped; NaN stays NaN."""
    if not math.isfinite(value):
        return math.nan
    return min(1.0, max(0.0, (value - lo) / (hi - lo)))


def eye_openness(ear: float, usual: float = EAR_OPEN) -> float:
    """0 (closed) - 1 (open) from an eye aspect ratio and that eye's usual open ratio."""
    return _unit(ear / usual, EAR_CLOSED_RATIO, 1.0)


def signals(m: dict[str, float], usual_left: float = EAR_OPEN,
            usual_right: float = EAR_OPEN) -> Expression:
    """The 0-1 signals of :func:`raw_measures` (no blink: that needs time)."""
    return Expression(
        eye_open_left=eye_openness(m["ear_left"], usual_left),
        eye_open_right=eye_openness(m["ear_right"], usual_right),
        blink_left=False,
        blink_right=False,
        mouth_open=_unit(m["mouth_gap"], 0.0, MOUTH_OPEN_FULL),
        mouth_wide=_unit(m["mouth_width"], MOUTH_WIDE_NEUTRAL, MOUTH_WIDE_FULL),
        brow_raise_left=_unit(m["brow_left"], BROW_NEUTRAL, BROW_FULL),
        brow_raise_right=_unit(m["brow_right"], BROW_NEUTRAL, BROW_FULL),
    )


def expression(points: np.ndarray) -> Expression:
    """The signals of one face's points in a still image (the population's usual open eye)."""
    return signals(raw_measures(points))


class EyeLevels:
    """Each face's usual open eye aspect ratio, per eye: an upper envelope of its ratios that
    rises fast (:data:`LEVEL_UP`) and falls slowly (:data:`LEVEL_DOWN`, ~7 s at 30 fps), so a
    blink barely moves it. State per face id, dropped when a frame comes without the id."""

    def __init__(self) -> None:
        self._levels: dict[int, list[float]] = {}

    def update(self, measures: dict[int, dict[str, float]]) -> dict[int, tuple[float, float]]:
        """``(usual_left, usual_right)`` per face id after this frame's ``raw_measures``."""
        for fid in [i for i in self._levels if i not in measures]:
            del self._levels[fid]
        out = {}
        for fid, m in measures.items():
            levels = self._levels.setdefault(fid, [math.nan, math.nan])
            for k, key in enumerate(("ear_left", "ear_right")):
                ear = m[key]
                if not math.isfinite(ear):
                    continue
                if not math.isfinite(levels[k]):
                    levels[k] = ear
                else:
                    rate = LEVEL_UP if ear > levels[k] else LEVEL_DOWN
                    levels[k] += rate * (ear - levels[k])
            out[fid] = (levels[0] if math.isfinite(levels[0]) else EAR_OPEN,
                        levels[1] if math.isfinite(levels[1]) else EAR_OPEN)
        return out


class _EyeLatch:
    """Hysteresis of one eye: fires once per closing."""

    __slots__ = ("armed",)

    def __init__(self) -> None:
        self.armed = False  # a new face must be seen open before a blink counts

    def step(self, openness: float) -> bool:
        if not math.isfinite(openness):
            return False
        if openness >= BLINK_OPEN:
            self.armed = True
        elif self.armed and openness < BLINK_CLOSED:
            self.armed = False
            return True
        return False


class BlinkDetector:
    """Blink events per face id: state is made when an id appears and dropped when a frame
    comes without it (as the smoothing filter's)."""

    def __init__(self) -> None:
        self._eyes: dict[int, tuple[_EyeLatch, _EyeLatch]] = {}

    def update(self, faces: dict[int, Expression]) -> dict[int, Expression]:
        """``faces`` (id -> signals of this frame) with ``blink_left/right`` set."""
        for fid in [i for i in self._eyes if i not in faces]:
            del self._eyes[fid]
        out = {}
        for fid, e in faces.items():
            left, right = self._eyes.setdefault(fid, (_EyeLatch(), _EyeLatch()))
            out[fid] = replace(e, blink_left=left.step(e.eye_open_left),
                               blink_right=right.step(e.eye_open_right))
        return out
