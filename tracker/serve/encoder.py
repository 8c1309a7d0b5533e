"""Turning tracked frames into what the websocket clients get, once per frame, on the server's
own thread.

The pipeline's sink only calls :meth:`FrameEncoder.offer`: it numbers the frame within its
stream and puts it in that stream's latest-wins slot (a frame not encoded yet is replaced;
clients see it as ``dropped``). The encoder thread takes the slots in the order they filled
(so a busy stream cannot starve another), solves the head poses, makes the JSON text once per
distinct subscription of the connected clients and, when a client wants one and the rate
allows, the preview JPEG once, each also as a ready websocket frame (servers send unmasked
frames, so the bytes are the same for every client); it hands the result
(:class:`EncodedFrame`) to the server's event loop. The work per frame therefore does not grow
with the number of clients, and none of it runs on the pipeline's threads.

A server of one stream uses the stream key None; a server of several uses the streams' names,
which then appear in the frame messages and preview headers. :meth:`FrameEncoder.end` queues a
stream's end behind its last frame (:class:`StreamEnded`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
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
StreamKey = str | None  # a stream's name; None on a server of one stream


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """A stream of several ended, after its last frame: why, and its frame count."""

    stream: str
    reason: str
    frames: int


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
    counts the published frames of its ``stream`` from 1."""

    __slots__ = ("seq", "stream", "base", "faces", "preview", "preview_wire", "_heads", "_wires")

    def __init__(self, seq: int, base: tuple[int, float, float, int, int],
                 faces: list[dict[str, Any]], preview: bytes | None,
                 stream: StreamKey = None) -> None:
        self.seq = seq
        self.stream = stream
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
            msg = protocol.frame_message(*self.base, self.faces, sub, stream=self.stream)
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
    """Encodes the newest offered frame of each stream on its own thread and hands it (and
    each :class:`StreamEnded`) to ``deliver``.

    ``audience`` (the distinct subscriptions of the connected clients, which tell the
    streams and previews they want; empty: nobody to encode for) is set by the server.
    """

    def __init__(self, options: StreamOptions,
                 deliver: Callable[[EncodedFrame | StreamEnded], None]) -> None:
        self.options = options
        self.deliver = deliver
        self.audience: tuple[Subscription, ...] = ()
        self.counts: dict[StreamKey, int] = {}  # frames offered so far per stream (last seq)
        self.encoded = 0
        self._cond = threading.Condition()
        # stream key -> (seq, frame) waiting, or ("end", key) -> reason; oldest first
        self._queue: OrderedDict[Hashable, Any] = OrderedDict()
        self._stopping = False
        self._last_preview: dict[StreamKey, float] = {}
        self._failures = 0
        self._thread = threading.Thread(target=self._run, name="tracker-ws-encode", daemon=True)

    @property
    def published(self) -> int:
        """Frames offered so far, all streams together."""
        with self._cond:
            return sum(self.counts.values())

    def snapshot(self) -> dict[StreamKey, int]:
        """Frames offered so far per stream (a copy)."""
        with self._cond:
            return dict(self.counts)

    def start(self) -> None:
        """Start the encoder thread."""
        self._thread.start()

    def offer(self, tracked: TrackedFrame, stream: StreamKey = None) -> None:
        """Number ``tracked`` within ``stream`` and leave it for the encoder (replacing a
        frame of that stream not taken yet)."""
        with self._cond:
            if self._stopping:
                return
            seq = self.counts[stream] = self.counts.get(stream, 0) + 1
            if self.audience:
                self._queue[stream] = (seq, tracked)  # a replaced frame keeps its turn
                self._cond.notify()

    def end(self, stream: str, reason: str) -> None:
        """Deliver :class:`StreamEnded` for ``stream`` once its last frame went out."""
        with self._cond:
            self._queue[("end", stream)] = reason
            self._cond.notify()

    def close(self, timeout: float) -> None:
        """Encode and deliver what is still waiting, then stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                key, item = self._queue.popitem(last=False)
            if isinstance(key, tuple):
                with self._cond:
                    frames = self.counts.get(key[1], 0)
                self.deliver(StreamEnded(key[1], item, frames))
                continue
            try:
                encoded = self.encode(*item, stream=key)
            except Exception as exc:  # a bug or a bad frame: skip it, keep serving
                self._failures += 1
                if self._failures == 1:
                    log.error("websocket: cannot encode frame %d: %r (later failures only "
                              "counted)", item[1].frame.index, exc)
                continue
            if encoded is not None:
                self.encoded += 1
                self.deliver(encoded)

    def encode(self, seq: int, tracked: TrackedFrame,
               stream: StreamKey = None) -> EncodedFrame | None:
        """The frame for the current audience (None when nobody connected wants it)."""
        audience = tuple(s for s in self.audience if s.wants(stream))
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
        due = now - self._last_preview.get(stream, -math.inf) >= 1.0 / o.preview_fps
        if o.preview and due and any(s.preview for s in audience):
            self._last_preview[stream] = now
            header, jpeg = preview_jpeg(tracked, o.preview_width, o.jpeg_quality)
            if stream is not None:
                header = {"type": header.pop("type"), "stream": stream, **header}
            packet = protocol.preview_packet(header, jpeg)
        item = EncodedFrame(seq, (f.index, f.time, f.wall_time, w, h), faces, packet, stream)
        for sub in audience:
            item.wire(sub)
        return item
