"""JSON records of tracked faces, frames and head poses, for the JSONL sink and the websocket.

The one place the numbers of faces, frames and poses are rounded: floats keep a fixed number
of decimals per kind; NaN and +-inf become ``None`` (JSON ``null``; JSON has no NaN). A value
that rounds to zero from below stays ``-0.0`` (written ``-0.0``; it equals 0 for any JSON
reader), which is what the JSONL output has always had.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from tracker.types import Landmarks, TrackedFrame

if TYPE_CHECKING:
    from tracker.outputs.headpose import HeadPose

# Decimals kept per kind of number.
PIXEL_DECIMALS = 2  # box and points, frame pixels
CONFIDENCE_DECIMALS = 3
PRESENCE_DECIMALS = 4
TIME_DECIMALS = 6  # seconds: microseconds
ANGLE_DECIMALS = 2  # yaw, pitch, roll in degrees
RVEC_DECIMALS = 5  # Rodrigues vector, radians
TVEC_DECIMALS = 2  # millimetres
POSE_ERROR_DECIMALS = 2  # RMS reprojection error, pixels


def number(value: float, decimals: int) -> float | None:
    """``value`` rounded to ``decimals``; None when it is not finite."""
    v = float(value)
    return round(v, decimals) if math.isfinite(v) else None


def numbers(values: Any, decimals: int) -> Any:
    """Rounded (nested) lists of an array-like; non-finite entries become None."""
    arr = np.round(np.asarray(values, dtype=np.float64), decimals)
    out = arr.tolist()
    return out if np.isfinite(arr).all() else _none_if_not_finite(out)


def _none_if_not_finite(v: Any) -> Any:
    if isinstance(v, list):
        return [_none_if_not_finite(x) for x in v]
    return v if math.isfinite(v) else None


def face_record(face: Landmarks) -> dict[str, Any]:
    """One face: ``{"id", "box", "points", "confidence", "presence"}`` (the JSONL order)."""
    return {
        "id": int(face.face_id),
        "box": numbers(face.box.as_list(), PIXEL_DECIMALS),
        "points": numbers(face.points, PIXEL_DECIMALS),
        "confidence": numbers(face.confidence, CONFIDENCE_DECIMALS),
        "presence": number(face.presence, PRESENCE_DECIMALS),
    }


def frame_record(tracked: TrackedFrame) -> dict[str, Any]:
    """One JSONL line's object: ``{"frame", "time", "faces": [face_record, ...]}``."""
    return {
        "frame": int(tracked.frame.index),
        "time": number(tracked.frame.time, TIME_DECIMALS),
        "faces": [face_record(f) for f in tracked.faces],
    }


def pose_record(pose: HeadPose | None) -> dict[str, Any] | None:
    """A head pose: ``{"yaw", "pitch", "roll", "rvec", "tvec", "error"}``; None when unsolved."""
    if pose is None:
        return None
    return {
        "yaw": number(pose.yaw, ANGLE_DECIMALS),
        "pitch": number(pose.pitch, ANGLE_DECIMALS),
        "roll": number(pose.roll, ANGLE_DECIMALS),
        "rvec": numbers(pose.rvec, RVEC_DECIMALS),
        "tvec": numbers(pose.tvec, TVEC_DECIMALS),
        "error": number(pose.error, POSE_ERROR_DECIMALS),
    }
