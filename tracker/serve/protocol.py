"""Websocket protocol v1: the messages ``tracker`` sends and understands (see docs/protocol.md).

Server to client, as JSON text: ``hello`` (once, first), ``frame`` (one per processed frame,
latest-wins per client), ``subscribed`` / ``error`` (replies), ``stream_end`` (one stream of
several ended), ``bye`` (end of stream, last). Preview images are binary messages: a 4-byte
big-endian header length, a JSON header, then a JPEG (:func:`preview_packet`). Client to
server: ``subscribe`` only (:func:`parse_message`, :func:`parse_subscribe`). ``CLOSE_*`` are
the close codes the server ends connections with.

A server of several streams (one run, several sources) lists them in its ``hello`` and names
the stream in every ``frame`` and preview header (``stream``); a server of one stream sends
neither, so its messages are those of a single-stream server before streams existed.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
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
    """What a client asked for: per-face ``fields``, ``faces`` ids (None: all), ``preview``,
    and, from a server of several streams, the ``streams`` by name (None: all)."""

    fields: tuple[str, ...] = FACE_FIELDS
    faces: tuple[int, ...] | None = None
    preview: bool = True
    streams: tuple[str, ...] | None = None

    def wants(self, stream: str | None) -> bool:
        """Whether frames of ``stream`` (None: the one stream of a single-stream server) go
        to this client."""
        return stream is None or self.streams is None or stream in self.streams

    def as_dict(self, streams: bool = False) -> dict[str, Any]:
        """The subscription as sent; ``streams``: include the ``streams`` key (a server of
        several streams)."""
        out: dict[str, Any] = {
            "fields": list(self.fields),
            "faces": None if self.faces is None else list(self.faces),
            "preview": self.preview,
        }
        if streams:
            out["streams"] = None if self.streams is None else list(self.streams)
        return out


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


def parse_subscribe(data: Any, current: Subscription,
                    streams: Sequence[str] | None = None) -> Subscription:
    """The subscription a ``subscribe`` message asks for; keys left out keep ``current``.
    ``streams``: the names of a server of several streams (None: one stream, and the
    ``streams`` key is unknown).

    Raises :class:`ProtocolError` for anything else (unknown type or keys, bad values).
    """
    if not isinstance(data, dict):
        raise ProtocolError("a message must be a JSON object")
    kind = data.get("type")
    if kind != "subscribe":
        raise ProtocolError(f"unknown message type {kind!r} (only 'subscribe' is accepted)")
    known = {"type", "fields", "faces", "preview"} | ({"streams"} if streams is not None else set())
    unknown = sorted(set(data) - known)
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
    chosen = current.streams
    if streams is not None and "streams" in data:
        chosen = _parse_streams(data["streams"], streams)
    return Subscription(fields, faces, preview, chosen)


def _parse_streams(value: Any, names: Sequence[str]) -> tuple[str, ...] | None:
    """The ``streams`` of a subscribe: null (all) or known names, kept in the server's order."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise ProtocolError("'streams' must be null or a list of stream names")
    bad = sorted({n for n in value if n not in names})
    if bad:
        shown = [n[:40] for n in bad[:5]]
        raise ProtocolError(f"unknown streams {shown}; known: {', '.join(names)}")
    return tuple(n for n in names if n in value)


def camera_dict(width: int, height: int,
                camera: tuple[float, float, float, float] | None = None) -> dict[str, float]:
    """The pinhole camera the head poses are computed with (``camera``: fx, fy, cx, cy as
    configured; default: focal = the longer side, centred)."""
    if camera is not None:
        fx, fy, cx, cy = (float(v) for v in camera)
        return {"fx": fx, "fy": fy, "cx": cx, "cy": cy}
    k = camera_matrix(width, height)
    return {"fx": k[0, 0], "fy": k[1, 1], "cx": k[0, 2], "cy": k[1, 2]}


def source_fields(source: SourceMeta) -> dict[str, Any]:
    """``source``, ``camera`` and ``mirrored`` of a hello (or of one of its ``streams``)."""
    return {
        "source": {
            "width": int(source.width),
            "height": int(source.height),
            "fps": round(float(source.fps), 3) if math.isfinite(source.fps) else 0.0,
        },
        "camera": camera_dict(source.width, source.height, source.camera),
        "mirrored": bool(source.mirrored),
    }


def stream_dict(name: str, source: SourceMeta | None) -> dict[str, Any]:
    """One entry of a hello's ``streams``; ``source`` None: its source could not be opened
    (``source`` and ``camera`` are null)."""
    if source is None:
        return {"name": name, "source": None, "camera": None, "mirrored": False}
    return {"name": name, **source_fields(source)}


def hello_message(
    source: SourceMeta,
    client_id: int,
    subscription: Subscription,
    preview: dict[str, Any] | None,
    streams: Sequence[tuple[str, SourceMeta | None]] | None = None,
) -> dict[str, Any]:
    """First message to every client. ``preview``: ``{"max_fps", "width"}`` or None (off).
    ``streams``: a server of several streams, each ``(name, meta or None)``; ``source`` then
    describes the first stream that opened."""
    message = {
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "tracker": __version__,
        "client_id": client_id,
        "landmarks": {
            "count": len(LANDMARK_NAMES),
            "names": list(LANDMARK_NAMES),
            "connections": [list(c) for c in CONNECTIONS],
        },
        **source_fields(source),
        "pose_model": {
            "units": "mm",
            "origin_point": MODEL_ORIGIN,
            "points": np.round(FACE_MODEL_68, 1).tolist(),
        },
        "preview": preview,
        "subscription": subscription.as_dict(streams=streams is not None),
    }
    if streams is not None:
        message["streams"] = [stream_dict(name, meta) for name, meta in streams]
    return message


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
    stream: str | None = None,
) -> dict[str, Any]:
    """One ``frame`` message; ``faces`` come from :func:`face_dict` and are filtered here.
    ``stream``: the stream's name on a server of several streams (None: no ``stream`` key)."""
    subscription = subscription or Subscription()
    keep = ("id", *subscription.fields)
    wanted = None if subscription.faces is None else set(subscription.faces)
    named = {} if stream is None else {"stream": stream}
    return {
        "type": "frame",
        **named,
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


def stream_end_message(stream: str, reason: str, frames: int) -> dict[str, Any]:
    """One stream of several ended (the others go on): why, and how many of its frames the
    server published."""
    return {"type": "stream_end", "stream": stream, "reason": reason, "frames": int(frames)}


def subscribed_message(subscription: Subscription, streams: bool = False) -> dict[str, Any]:
    """Reply to a valid ``subscribe``: the subscription now in force (``streams``: a server
    of several streams, which tells the streams subscribed to)."""
    return {"type": "subscribed", **subscription.as_dict(streams)}


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
