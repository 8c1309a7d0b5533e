"""Face regions of interest: box/landmarks -> (rotated) square crop, and the inverse mapping.

One crop convention is shared by training, evaluation and run time: a square of side
``margin * max(w, h)`` centred on the face box, optionally rotated so the eye line is level.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from tracker.face68 import LEFT_EYE, RIGHT_EYE
from tracker.types import Box

MARGIN = 1.25


def box_from_points(points: np.ndarray) -> Box:
    """Tight box around a set of points."""
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    return Box(float(x0), float(y0), float(x1), float(y1))


def crop_affine(
    center: tuple[float, float], side: float, angle: float, out_size: int
) -> np.ndarray:
    """2x3 affine mapping frame pixels to crop pixels.

    The square of ``side`` pixels centred on ``center`` and rotated by ``angle`` radians
    maps onto an ``out_size`` x ``out_size`` image (pixel centres at 0..out_size-1).
    """
    s = out_size / side
    c, si = math.cos(angle) * s, math.sin(angle) * s
    cx, cy = center
    half = (out_size - 1) / 2.0
    # rotate by -angle around center, then scale, then move center to crop centre
    return np.array(
        [[c, si, half - c * cx - si * cy], [-si, c, half + si * cx - c * cy]],
        dtype=np.float64,
    )


def box_affine(box: Box, out_size: int, margin: float = MARGIN, angle: float = 0.0) -> np.ndarray:
    """Frame->crop affine for a face box with the standard margin."""
    side = margin * max(box.width, box.height, 1.0)
    return crop_affine(box.center, side, angle, out_size)


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine."""
    return cv2.invertAffineTransform(np.asarray(m, dtype=np.float64))


def transform_points(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to ``(N, 2)`` points."""
    pts = np.asarray(points, dtype=np.float64)
    out = pts @ m[:, :2].T + m[:, 2]
    return out.astype(np.float32)


def warp_crop(image: np.ndarray, m: np.ndarray, out_size: int) -> np.ndarray:
    """Crop ``image`` with the frame->crop affine ``m`` (bilinear, replicated border)."""
    return cv2.warpAffine(
        image, m, (out_size, out_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def eye_angle(points: np.ndarray) -> float:
    """Angle (radians) of the eye line of 68 points: from the subject's right-eye centre (on the
    image's left for an upright face) to the left-eye centre; 0 for a level, upright face."""
    right = points[RIGHT_EYE].mean(axis=0)
    left = points[LEFT_EYE].mean(axis=0)
    return math.atan2(float(left[1] - right[1]), float(left[0] - right[0]))


def rotated_roi(points: np.ndarray, scale: float) -> tuple[tuple[float, float], float, float]:
    """``(center, side, angle)`` of the square ROI around ``points`` with the eye line level.

    The points are turned upright by the eye-line angle; ``side`` is ``scale`` times the larger
    side of their tight box there, and ``center`` is that box's centre, in frame pixels.
    """
    angle = eye_angle(points)
    c, s = math.cos(angle), math.sin(angle)
    pts = np.asarray(points, dtype=np.float64)
    # rotate by -angle: upright coordinates
    u = pts[:, 0] * c + pts[:, 1] * s
    v = -pts[:, 0] * s + pts[:, 1] * c
    cu, cv = 0.5 * (u.min() + u.max()), 0.5 * (v.min() + v.max())
    side = scale * max(float(u.max() - u.min()), float(v.max() - v.min()), 1.0)
    center = (float(cu * c - cv * s), float(cu * s + cv * c))
    return center, side, angle


def square_box(center: tuple[float, float], side: float, margin: float = MARGIN) -> Box:
    """Face box whose standard crop (:func:`box_affine`) is the ``side`` square at ``center``."""
    half = 0.5 * side / margin
    cx, cy = center
    return Box(cx - half, cy - half, cx + half, cy + half)


def landmark_crop(image: np.ndarray, points: np.ndarray, size: int) -> np.ndarray:
    """The standard upright crop of a face (its landmarks' box, ``MARGIN`` times) at ``size``."""
    box = box_from_points(points)
    m = crop_affine(box.center, MARGIN * max(box.width, box.height, 1.0), 0.0, size)
    return warp_crop(image, m, size)
