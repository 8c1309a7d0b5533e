"""The VMC protocol output (``--vmc [HOST:]PORT``): one OSC bundle per frame over UDP.

The tracker acts as a VMC *performer* sending to a *marionette* (the app that draws the
avatar: EVMC4U, VSeeFace's receiver, VMC4B, ...), which commonly listens on port
:data:`DEFAULT_PORT` (39539). Each bundle holds, for the face with the lowest id:

* ``/VMC/Ext/Bone/Pos "Head" p.x p.y p.z q.x q.y q.z q.w``: Unity axes (left-handed, x right,
  y up, z forward, metres). The position is the nose tip relative to the camera (the pose's
  ``tvec`` with y flipped); the rotation turns the avatar's head as the subject's turns from
  looking straight into the camera (:func:`head_quaternion`);
* ``/VMC/Ext/Blend/Val NAME VALUE`` for :data:`BLENDSHAPES`, then ``/VMC/Ext/Blend/Apply``;

and always ``/VMC/Ext/T time`` and ``/VMC/Ext/OK 1 3 0 tracking`` (v2.7: loaded, calibrated,
normal mode, tracking 1 when a face was sent, 0 when none was found).

The socket is non-blocking: a bundle the OS cannot take at once (or cannot route) is dropped
and counted (``VmcSink.dropped``), never waited for, so no receiver can slow the pipeline.
Needs ``python-osc`` (``pip install 'tracker[vmc]'``).
"""

from __future__ import annotations

import math
import socket
from typing import Any

from tracker.errors import UsageError
from tracker.runtime.pipeline import Stage
from tracker.types import Landmarks, TrackedFrame

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 39539  # the marionette's usual receiving port (performers send to it)

BLENDSHAPES: tuple[tuple[str, str, bool], ...] = (
    ("Blink_L", "eye_open_left", True),
    ("Blink_R", "eye_open_right", True),
    ("A", "mouth_open", False),
    ("I", "mouth_wide", False),
    ("BrowOuterUpLeft", "brow_raise_left", False),
    ("BrowOuterUpRight", "brow_raise_right", False),
)
"""``(blendshape, expression field, inverted)``: VRM 0.x preset names (``Blink_L`` = 1 - the
subject's left eye openness, ``A`` the open mouth, ``I`` the wide one) and the Perfect Sync
(ARKit-style) brow clips, which models without them ignore. ``_L``/``Left`` = the subject's."""


def parse_vmc_address(spec: str) -> tuple[str, int]:
    """``(host, port)`` of ``[HOST:]PORT`` (``[::1]:39539`` for IPv6); raises UsageError."""
    text = str(spec).strip()
    host, port_text = DEFAULT_HOST, text
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
    if not (host and port_text.isdigit() and 1 <= int(port_text) <= 65535):
        raise UsageError(f"--vmc must be [HOST:]PORT with PORT 1-65535, got {spec!r}")
    return host, int(port_text)


def _quat_mul(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, float, float, float]:
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return (aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz)


def _axis_quat(axis: int, degrees: float) -> tuple[float, float, float, float]:
    half = math.radians(degrees) / 2.0
    q = [0.0, 0.0, 0.0, math.cos(half)]
    q[axis] = math.sin(half)
    return (q[0], q[1], q[2], q[3])


def head_quaternion(yaw: float, pitch: float, roll: float) -> tuple[float, float, float, float]:
    """Unity quaternion ``(x, y, z, w)`` of the head: ``Quaternion.Euler(-pitch, -yaw, roll)``
    (Unity applies z, then x, then y), so the subject turning to their left (yaw > 0) turns
    the avatar to its left, looking up (pitch > 0) tilts it up, and a clockwise roll in the
    image (roll > 0) tilts it toward its left shoulder."""
    return _quat_mul(_quat_mul(_axis_quat(1, -yaw), _axis_quat(0, -pitch)), _axis_quat(2, roll))


def vmc_messages(tracked: TrackedFrame) -> list[tuple[str, list[Any]]]:
    """The ``(address, arguments)`` of one frame's bundle, in order."""
    messages: list[tuple[str, list[Any]]] = []
    face: Landmarks | None = min(tracked.faces, key=lambda f: f.face_id, default=None)
    if face is not None and face.pose is not None:
        p = face.pose
        t = [float(v) / 1000.0 for v in p.tvec]
        messages.append(("/VMC/Ext/Bone/Pos",
                         ["Head", t[0], -t[1], t[2], *head_quaternion(p.yaw, p.pitch, p.roll)]))
    if face is not None and face.expression is not None:
        for name, field, inverted in BLENDSHAPES:
            value = float(getattr(face.expression, field))
            if math.isfinite(value):
                messages.append(("/VMC/Ext/Blend/Val", [name, 1.0 - value if inverted else value]))
        messages.append(("/VMC/Ext/Blend/Apply", []))
    time = float(tracked.frame.time)
    messages.append(("/VMC/Ext/T", [time if math.isfinite(time) else 0.0]))
    messages.append(("/VMC/Ext/OK", [1, 3, 0, 1 if face is not None else 0]))
    return messages


def _osc() -> Any:
    try:
        from pythonosc import osc_bundle_builder, osc_message_builder
    except ImportError:
        raise UsageError("--vmc needs python-osc: pip install 'tracker[vmc]'") from None
    return osc_bundle_builder, osc_message_builder


def vmc_bundle(tracked: TrackedFrame) -> bytes:
    """One frame's OSC bundle (timetag: immediately), as bytes."""
    bundles, builders = _osc()
    bundle = bundles.OscBundleBuilder(bundles.IMMEDIATELY)
    for address, args in vmc_messages(tracked):
        msg = builders.OscMessageBuilder(address=address)
        for arg in args:
            msg.add_arg(arg, "f" if isinstance(arg, float) else None)
        bundle.add_content(msg.build())
    return bundle.build().dgram


class VmcSink(Stage):
    """Sends :func:`vmc_bundle` of every frame to ``HOST:PORT`` over non-blocking UDP."""

    name = "vmc"

    def __init__(self, address: str) -> None:
        _osc()  # fail before the run when python-osc is missing
        host, port = parse_vmc_address(address)
        try:
            info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        except OSError as exc:
            raise UsageError(f"--vmc: cannot resolve {host!r}: {exc.strerror or exc}") from None
        self.target = info[4]
        self.sent = self.dropped = 0
        self.last_error: str | None = None
        self._sock = socket.socket(info[0], socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def process(self, item: TrackedFrame) -> None:
        data = vmc_bundle(item)
        try:
            self._sock.sendto(data, self.target)
            self.sent += 1
        except OSError as exc:  # a full buffer, an ICMP "unreachable", no route: dropped
            self.dropped += 1
            self.last_error = exc.strerror or str(exc)

    def close(self) -> None:
        self._sock.close()
