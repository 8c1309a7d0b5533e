"""Records of tracked faces, frames, head poses and expressions: the JSONL sink's, the CSV
sink's and the websocket's (one serializer, so every output carries the same numbers).

The one place the numbers of faces, frames and poses are rounded: floats keep a fixed number
of decimals per kind; NaN and +-inf become ``None`` (JSON ``null``; JSON has no NaN). A value
that rounds to zero from below stays ``-0.0`` (written ``-0.0``; it equals 0 for any JSON
reader), which is what the JSONL output has always had.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from tracker.face68 import N_POINTS
from tracker.types import Expression, Landmarks, TrackedFrame

if TYPE_CHECKING:
    from tracker.types import HeadPose

# Decimals kept per kind of number.
PIXEL_DECIMALS = 2  # box and points, frame pixels
CONFIDENCE_DECIMALS = 3
PRESENCE_DECIMALS = 4
TIME_DECIMALS = 6  # seconds: microseconds
ANGLE_DECIMALS = 2  # yaw, pitch, roll in degrees
RVEC_DECIMALS = 5  # Rodrigues vector, radians
TVEC_DECIMALS = 2  # millimetres
POSE_ERROR_DECIMALS = 2  # RMS reprojection error, pixels
SIGNAL_DECIMALS = 3  # expression signals, 0-1

EXPRESSION_FIELDS: tuple[str, ...] = (
    "eye_open_left", "eye_open_right", "blink_left", "blink_right", "mouth_open", "mouth_wide",
    "brow_raise_left", "brow_raise_right",
)
"""The expression signals in record order (``blink_*`` are booleans, the rest 0-1)."""


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
    """One face: ``{"id", "box", "points", "confidence", "presence"}`` (the JSONL order), then
    ``"pose"`` (:func:`pose_record`) and ``"expression"`` (:func:`expression_record`) once the
    face went through the describe stage (``face.expression`` set)."""
    rec = {
        "id": int(face.face_id),
        "box": numbers(face.box.as_list(), PIXEL_DECIMALS),
        "points": numbers(face.points, PIXEL_DECIMALS),
        "confidence": numbers(face.confidence, CONFIDENCE_DECIMALS),
        "presence": number(face.presence, PRESENCE_DECIMALS),
    }
    if face.expression is not None:
        rec["pose"] = pose_record(face.pose)
        rec["expression"] = expression_record(face.expression)
    return rec


def frame_record(tracked: TrackedFrame, file: str | None = None) -> dict[str, Any]:
    """One JSONL line's object: ``{"frame", "time", "faces": [face_record, ...]}``; a still
    image's starts with its ``"file"``."""
    head: dict[str, Any] = {} if file is None else {"file": file}
    return {
        **head,
        "frame": int(tracked.frame.index),
        "time": number(tracked.frame.time, TIME_DECIMALS),
        "faces": [face_record(f) for f in tracked.faces],
    }


def expression_record(e: Expression) -> dict[str, Any]:
    """The signals of :data:`EXPRESSION_FIELDS`: booleans, and numbers (None when unknown)."""
    return {k: (bool(v) if isinstance(v, (bool, np.bool_)) else number(v, SIGNAL_DECIMALS))
            for k in EXPRESSION_FIELDS for v in (getattr(e, k),)}


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


POSE_COLUMNS: tuple[str, ...] = ("yaw", "pitch", "roll", "rvec_x", "rvec_y", "rvec_z",
                                 "tvec_x", "tvec_y", "tvec_z", "pose_error")
CSV_COLUMNS: tuple[str, ...] = (
    "frame", "time", "file", "id", "presence", *POSE_COLUMNS, *EXPRESSION_FIELDS,
    *(f"{a}{i}" for i in range(N_POINTS) for a in ("x", "y")),
    *(f"c{i}" for i in range(N_POINTS)),
)
"""The CSV header: one row per face per frame (README "CSV format")."""


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return repr(value) if isinstance(value, float) else str(value)


def csv_rows(tracked: TrackedFrame, file: str | None = None) -> list[list[str]]:
    """The CSV rows of one frame, in :data:`CSV_COLUMNS` order, rounded as in the JSONL;
    unknown numbers are empty cells, booleans 0/1."""
    rows = []
    for face in tracked.faces:
        rec = face_record(face)
        pose = rec.get("pose") or {}
        vec = (pose.get("rvec") or [None] * 3) + (pose.get("tvec") or [None] * 3)
        signals = rec.get("expression") or {}
        xy = [v for p in rec["points"] for v in p]
        cells = [int(tracked.frame.index), number(tracked.frame.time, TIME_DECIMALS), file or "",
                 rec["id"], rec["presence"], pose.get("yaw"), pose.get("pitch"), pose.get("roll"),
                 *vec, pose.get("error"), *(signals.get(k) for k in EXPRESSION_FIELDS),
                 *xy, *rec["confidence"]]
        rows.append([_cell(c) for c in cells])
    return rows
