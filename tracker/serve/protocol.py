"""Websocket protocol v1: the messages ``tracker`` sends and understands (see docs/protocol.md).

Server to client, as JSON text: ``hello`` (once, first), ``frame`` (one per processed frame,
latest-wins per client), ``subscribed`` / ``error`` (replies), ``bye`` (end of stream, last).
Preview images are binary messages: a 4-byte big-endian header length, a JSON header, then a
JPEG (:func:`preview_packet`). Client to server: ``subscribe`` only (:func:`parse_message`,
:func:`parse_subscribe`). ``CLOSE_*`` are the close codes the server ends connections with.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from tracker import __version__
from tracker.face68 import CONNECTIONS, REGIONS
from tracker.outputs import record
from tracker.outputs.headpose import FACE_MODEL_68, MODEL_ORIGIN, HeadPose, camera_matrix
from tracker.types import Landmarks

PROTOCOL_VERSION = 1

CLOSE_END = 1000  # end of stream, after ``bye``
CLOSE_GOING_AWAY = 1001  # the server stopped before the client took its ``bye``
CLOSE_TOO_MANY = 1013  # max_clients reached
CLOSE_UNAUTHORIZED = 4401  # missing or wrong token
CLOSE_FORBIDDEN = 4403  # origin or Host not allowed
CLOSE_STALLED = 4408  # stalled past the timeout

FACE_FIELDS: tuple[str, ...] = ("presence", "box", "points", "confidence", "pose", "expression")
"""Per-face fields a client may subscribe to (``id`` is always sent)."""

LANDMARK_NAMES: tuple[str, ...] = tuple(
    f"{region}_{k}" for region, indices in REGIONS.items() for k in range(len(indices))
)
"""Names of the 68 iBUG points in order, e.g. ``jaw_8`` (chin), ``nose_bridge_3`` (nose tip):
``tracker.face68.REGIONS`` names, whose ``right``/``left`` are the subject's (the right eye
appears on the image's left)."""

_PREVIEW_HEADER = struct.Struct(">I")


class ProtocolError(ValueError):
    """A client message that does not follow the protocol; the message says why."""


@dataclass(frozen=True, slots=True)
class SourceMeta:
    """What the hello tells about the source (never its path or URL, which may hold secrets)."""

    width: int
    height: int
    fps: float
    camera: tuple[float, float, float, float] | None = None  # fx, fy, cx, cy of the poses
    mirrored: bool = False  # frames are flipped left-right (selfie view)


@dataclass(frozen=True, slots=True)
class Subscription:
    """What a client asked for: per-face ``fields``, ``faces`` ids (None: all), ``preview``."""

    fields: tuple[str, ...] = FACE_FIELDS
    faces: tuple[int, ...] | None = None
    preview: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "fields": list(self.fields),
            "faces": None if self.faces is None else list(self.faces),
            "preview": self.preview,
        }


def parse_message(message: str | bytes) -> Any:
    """The JSON value of a client message; :class:`ProtocolError` for binary messages, text
    that is not JSON, and JSON nested deeper than Python's recursion limit."""
    if isinstance(message, bytes):
        raise ProtocolError("binary messages are not accepted")
    try:
        return json.loads(message)
    except RecursionError:
        raise ProtocolError("JSON nested too deeply") from None
    except ValueError:
        raise ProtocolError("not valid JSON") from None


def parse_subscribe(data: Any, current: Subscription) -> Subscription:
    """The subscription a ``subscribe`` message asks for; keys left out keep ``current``.

    Raises :class:`ProtocolError` for anything else (unknown type or keys, bad values).
    """
    if not isinstance(data, dict):
        raise ProtocolError("a message must be a JSON object")
    kind = data.get("type")
    if kind != "subscribe":
        raise ProtocolError(f"unknown message type {kind!r} (only 'subscribe' is accepted)")
    unknown = sorted(set(data) - {"type", "fields", "faces", "preview"})
    if unknown:
        raise ProtocolError(f"unknown subscribe keys: {', '.join(unknown)}")
    fields, faces, preview = current.fields, current.faces, current.preview
    if "fields" in data:
        value = data["fields"]
        if not isinstance(value, list) or not all(isinstance(f, str) for f in value):
            raise ProtocolError("'fields' must be a list of strings")
        bad = [f for f in value if f not in FACE_FIELDS]
        if bad:
            raise ProtocolError(f"unknown fields {bad}; known: {', '.join(FACE_FIELDS)}")
        fields = tuple(f for f in FACE_FIELDS if f in value)
    if "faces" in data:
        value = data["faces"]
        if value is not None and not (
            isinstance(value, list) and len(value) <= 64
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value)
        ):
            raise ProtocolError("'faces' must be null or a list of at most 64 face ids (ints >= 0)")
        faces = None if value is None else tuple(sorted(set(value)))
    if "preview" in data:
        if not isinstance(data["preview"], bool):
            raise ProtocolError("'preview' must be true or false")
        preview = data["preview"]
    return Subscription(fields, faces, preview)


def camera_dict(width: int, height: int,
                camera: tuple[float, float, float, float] | None = None) -> dict[str, float]:
    """The pinhole camera the head poses are computed with (``camera``: fx, fy, cx, cy as
    configured; default: focal = the longer side, centred)."""
    if camera is not None:
        fx, fy, cx, cy = (float(v) for v in camera)
        return {"fx": fx, "fy": fy, "cx": cx, "cy": cy}
    k = camera_matrix(width, height)
    return {"fx": k[0, 0], "fy": k[1, 1], "cx": k[0, 2], "cy": k[1, 2]}


def hello_message(
    source: SourceMeta,
    client_id: int,
    subscription: Subscription,
    preview: dict[str, Any] | None,
) -> dict[str, Any]:
    """First message to every client. ``preview``: ``{"max_fps", "width"}`` or None (off)."""
    return {
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "tracker": __version__,
        "client_id": client_id,
        "landmarks": {
            "count": len(LANDMARK_NAMES),
            "names": list(LANDMARK_NAMES),
            "connections": [list(c) for c in CONNECTIONS],
        },
        "source": {
            "width": int(source.width),
            "height": int(source.height),
            "fps": round(float(source.fps), 3) if math.isfinite(source.fps) else 0.0,
        },
        "camera": camera_dict(source.width, source.height, source.camera),
        "mirrored": bool(source.mirrored),
        "pose_model": {
            "units": "mm",
            "origin_point": MODEL_ORIGIN,
            "points": np.round(FACE_MODEL_68, 1).tolist(),
        },
        "preview": preview,
        "subscription": subscription.as_dict(),
    }


def _time(value: float) -> float:
    """A timestamp rounded like the JSONL's; 0.0 when it is not finite (the schema wants a number)."""
    t = record.number(value, record.TIME_DECIMALS)
    return 0.0 if t is None else t


def pose_dict(pose: HeadPose | None) -> dict[str, Any] | None:
    """The ``pose`` object of a face (None when the pose could not be solved)."""
    return record.pose_record(pose)


def face_dict(face: Landmarks, pose: HeadPose | None = None) -> dict[str, Any]:
    """Every field of one face (a subscription then picks from it): the JSONL face record
    (:func:`tracker.outputs.record.face_record`), which carries ``pose`` and ``expression``
    once the face was described; for a face that was not, ``pose`` is the given one."""
    rec = record.face_record(face)
    if "pose" not in rec:
        rec["pose"] = pose_dict(pose)
        rec["expression"] = None
    return rec


def frame_message(
    index: int,
    time: float,
    wall_time: float,
    width: int,
    height: int,
    faces: list[dict[str, Any]],
    subscription: Subscription | None = None,
    dropped: int = 0,
) -> dict[str, Any]:
    """One ``frame`` message; ``faces`` come from :func:`face_dict` and are filtered here."""
    subscription = subscription or Subscription()
    keep = ("id", *subscription.fields)
    wanted = None if subscription.faces is None else set(subscription.faces)
    return {
        "type": "frame",
        "frame": int(index),
        "time": _time(time),
        "wall_time": _time(wall_time),
        "width": int(width),
        "height": int(height),
        "faces": [
            {k: f[k] for k in keep} for f in faces if wanted is None or f["id"] in wanted
        ],
        "dropped": int(dropped),
    }


def bye_message(frames: int, reason: str) -> dict[str, Any]:
    """Last message: why the stream ended and how many frames the server published."""
    return {"type": "bye", "reason": reason, "frames": int(frames)}


def subscribed_message(subscription: Subscription) -> dict[str, Any]:
    """Reply to a valid ``subscribe``: the subscription now in force."""
    return {"type": "subscribed", **subscription.as_dict()}


def error_message(text: str) -> dict[str, Any]:
    """Reply to a message the server ignored."""
    return {"type": "error", "message": text}


def dumps(message: dict[str, Any]) -> str:
    """Compact JSON text of a message."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


def preview_packet(header: dict[str, Any], jpeg: bytes) -> bytes:
    """A binary preview message: ``>I`` header length, JSON header, JPEG bytes."""
    head = dumps(header).encode()
    return _PREVIEW_HEADER.pack(len(head)) + head + jpeg


def parse_preview(data: bytes) -> tuple[dict[str, Any], bytes]:
    """``(header, jpeg)`` of a binary preview message; raises ProtocolError when malformed."""
    if len(data) < _PREVIEW_HEADER.size:
        raise ProtocolError("preview message too short")
    (n,) = _PREVIEW_HEADER.unpack_from(data)
    end = _PREVIEW_HEADER.size + n
    if end > len(data):
        raise ProtocolError("preview header longer than the message")
    try:
        header = json.loads(data[_PREVIEW_HEADER.size:end])
    except ValueError:
        raise ProtocolError("preview header is not JSON") from None
    return header, bytes(data[end:])
