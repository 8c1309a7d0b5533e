"""Turning tracked frames into what the websocket clients get, once per frame, on the server's
own thread.

The pipeline's sink only calls :meth:`FrameEncoder.offer`: it numbers the frame and puts it in a
latest-wins slot (a frame not encoded yet is replaced; clients see it as ``dropped``). The
encoder thread takes the newest frame, solves the head poses, makes the JSON text once per
distinct subscription of the connected clients and, when a client wants one and the rate
allows, the preview JPEG once, each also as a ready websocket frame (servers send unmasked
frames, so the bytes are the same for every client); it hands the result
(:class:`EncodedFrame`) to the server's event loop. The work per frame therefore does not grow
with the number of clients, and none of it runs on the pipeline's threads.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from websockets.frames import Frame, Opcode

from tracker.outputs.headpose import estimate_pose
from tracker.serve import protocol
from tracker.serve.assets import preview_jpeg
from tracker.serve.options import StreamOptions
from tracker.serve.protocol import Subscription
from tracker.types import TrackedFrame

log = logging.getLogger("tracker.serve.server")

SubKey = tuple[tuple[str, ...], tuple[int, ...] | None]


def sub_key(sub: Subscription) -> SubKey:
    """What decides a frame message's text: the fields and faces a client subscribed to."""
    return sub.fields, sub.faces


def wire_frame(payload: bytes, text: bool) -> bytes:
    """``payload`` as one unfragmented, unmasked websocket frame (server to client, no
    extensions: the server runs without compression)."""
    return Frame(Opcode.TEXT if text else Opcode.BINARY, payload).serialize(mask=False)


class EncodedFrame:
    """One published frame, encoded: UTF-8 JSON per subscription (shared by every client with
    that subscription) and maybe a preview packet, each also as a websocket frame. ``seq``
    counts published frames from 1."""

    __slots__ = ("seq", "base", "faces", "preview", "preview_wire", "_heads", "_wires")

    def __init__(self, seq: int, base: tuple[int, float, float, int, int],
                 faces: list[dict[str, Any]], preview: bytes | None) -> None:
        self.seq = seq
        self.base = base
        self.faces = faces
        self.preview = preview
        self.preview_wire = None if preview is None else wire_frame(preview, text=False)
        self._heads: dict[SubKey, bytes] = {}
        self._wires: dict[tuple[SubKey, int], bytes] = {}

    def _head(self, key: SubKey, sub: Subscription) -> bytes:
        """The JSON text up to the ``dropped`` value; made once per subscription."""
        head = self._heads.get(key)
        if head is None:
            msg = protocol.frame_message(*self.base, self.faces, sub)
            del msg["dropped"]
            head = self._heads[key] = (protocol.dumps(msg)[:-1] + ',"dropped":').encode()
        return head

    def text(self, sub: Subscription, dropped: int) -> bytes:
        """The ``frame`` message (UTF-8 JSON) for a client with ``sub`` that missed
        ``dropped`` frames."""
        return b"%s%d}" % (self._head(sub_key(sub), sub), dropped)

    def wire(self, sub: Subscription, dropped: int = 0) -> bytes:
        """:meth:`text` as a websocket frame; made once per subscription and ``dropped``
        value (clients that keep up all have the same one)."""
        key = sub_key(sub)
        wire = self._wires.get((key, dropped))
        if wire is None:
            text = b"%s%d}" % (self._head(key, sub), dropped)
            wire = self._wires[key, dropped] = wire_frame(text, text=True)
        return wire


class FrameEncoder:
    """Encodes the newest offered frame on its own thread and hands it to ``deliver``.

    ``audience`` (the distinct subscriptions of the connected clients; empty: nobody to
    encode for) and ``previews`` (whether a client wants previews) are set by the server.
    """

    def __init__(self, options: StreamOptions, deliver: Callable[[EncodedFrame], None]) -> None:
        self.options = options
        self.deliver = deliver
        self.audience: tuple[Subscription, ...] = ()
        self.previews = False
        self.published = 0  # frames offered so far (the last one's seq)
        self.encoded = 0
        self._cond = threading.Condition()
        self._item: tuple[int, TrackedFrame] | None = None
        self._stopping = False
        self._last_preview = -math.inf
        self._failures = 0
        self._thread = threading.Thread(target=self._run, name="tracker-ws-encode", daemon=True)

    def start(self) -> None:
        """Start the encoder thread."""
        self._thread.start()

    def offer(self, tracked: TrackedFrame) -> None:
        """Number ``tracked`` and leave it for the encoder (replacing one not taken yet)."""
        with self._cond:
            if self._stopping:
                return
            self.published += 1
            if self.audience:
                self._item = (self.published, tracked)
                self._cond.notify()

    def close(self, timeout: float) -> None:
        """Encode and deliver the frame still waiting, then stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._item is None and not self._stopping:
                    self._cond.wait()
                item, self._item = self._item, None
            if item is None:
                return
            try:
                encoded = self.encode(*item)
            except Exception as exc:  # a bug or a bad frame: skip it, keep serving
                self._failures += 1
                if self._failures == 1:
                    log.error("websocket: cannot encode frame %d: %r (later failures only "
                              "counted)", item[1].frame.index, exc)
                continue
            if encoded is not None:
                self.encoded += 1
                self.deliver(encoded)

    def encode(self, seq: int, tracked: TrackedFrame) -> EncodedFrame | None:
        """The frame for the current audience (None when nobody is connected)."""
        audience = self.audience
        if not audience:
            return None
        f = tracked.frame
        h, w = f.image.shape[:2]
        faces = [  # described faces carry their pose (camera as configured); others get one here
            protocol.face_dict(face) if face.expression is not None
            else protocol.face_dict(face, estimate_pose(face.points, w, h, face.confidence))
            for face in tracked.faces
        ]
        packet = None
        o = self.options
        now = time.monotonic()
        if o.preview and self.previews and now - self._last_preview >= 1.0 / o.preview_fps:
            self._last_preview = now
            packet = protocol.preview_packet(*preview_jpeg(tracked, o.preview_width,
                                                           o.jpeg_quality))
        item = EncodedFrame(seq, (f.index, f.time, f.wall_time, w, h), faces, packet)
        for sub in audience:
            item.wire(sub)
        return item
