"""One connected websocket client: its latest-wins buffers and the task that sends them.

A frame offered to a client that is keeping up (nothing buffered, nothing waiting, its socket
takes data) is written at once as the encoder's ready websocket frame, shared by all clients:
no task switch and no copy per client. Otherwise the client's buffers hold it: per stream at
most one frame (encoded text, shared with the other clients), one preview and a ``stream_end``
(:class:`_Slot`), plus a few control replies, sent by the client's own task, the streams in
the order their slots filled. A newer frame replaces one of its stream not sent yet, and every
frame the client misses, replaced here or skipped before encoding, is counted per stream by
sequence number and reported in the ``dropped`` field of the next frame of that stream it gets.
Everything here runs on the server's loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from tracker.serve import protocol
from tracker.serve.encoder import EncodedFrame, StreamEnded, StreamKey
from tracker.serve.protocol import CLOSE_END, CLOSE_STALLED, Subscription

log = logging.getLogger("tracker.serve.server")

MAX_CONTROL = 8  # replies queued per client (more are dropped)
MAX_ERRORS_LOGGED = 3  # malformed messages logged per client (then only counted)


class _Slot:
    """What one stream holds for a client: the frame, preview and ``stream_end`` not sent
    yet, the seq of the newest frame offered (``seen``) and the frames missed since the last
    one sent (``missed``)."""

    __slots__ = ("seen", "missed", "frame", "preview", "end")

    def __init__(self, seen: int) -> None:
        self.seen = seen
        self.missed = 0
        self.frame: EncodedFrame | None = None
        self.preview: bytes | None = None
        self.end: str | None = None


@dataclass(eq=False)
class Client:
    """A connected client; ``seen`` is, per stream, the seq of the last frame published before
    it connected."""

    id: int
    ws: ServerConnection
    sub: Subscription
    seen: dict[StreamKey, int]
    counts: dict[str, int]  # the server's counters: ``sent`` and ``previews`` are added here
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    slots: dict[StreamKey, _Slot] = field(default_factory=dict)
    waiting: dict[StreamKey, None] = field(default_factory=dict)  # slots to send, oldest first
    control: deque[str] = field(default_factory=deque)
    dropped: int = 0  # frames missed in all
    sent: int = 0
    errors: int = 0
    bye: str | None = None
    busy_since: float | None = None  # monotonic start of the send in progress
    stalled: bool = False

    def _slot(self, stream: StreamKey) -> _Slot:
        slot = self.slots.get(stream)
        if slot is None:
            slot = self.slots[stream] = _Slot(self.seen.get(stream, 0))
        return slot

    def _queue(self, stream: StreamKey) -> None:
        self.waiting[stream] = None  # a stream already waiting keeps its turn
        self.wake.set()

    def offer(self, item: EncodedFrame) -> int:
        """Send ``item`` now or put it in its stream's slot; returns how many frames the
        client now misses."""
        if self.bye is not None or not self.sub.wants(item.stream):
            return 0
        s = self._slot(item.stream)
        if item.seq <= s.seen:
            return 0
        missed = item.seq - s.seen - 1 + (s.frame is not None)
        s.missed += missed
        self.dropped += missed
        s.seen = item.seq
        preview = item.preview_wire if self.sub.preview else None
        if not self.waiting and self._idle():
            transport = self.ws.transport
            transport.write(item.wire(self.sub, s.missed))
            s.missed = 0
            self.sent += 1
            self.counts["sent"] += 1
            if preview is not None:
                transport.write(preview)
                self.counts["previews"] += 1
            return missed
        s.frame = item
        if preview is not None:
            s.preview = item.preview
        self._queue(item.stream)
        return missed

    def stream_ended(self, ended: StreamEnded) -> None:
        """Queue ``stream_end`` behind what that stream has waiting."""
        if self.bye is None:
            self._slot(ended.stream).end = protocol.dumps(
                protocol.stream_end_message(ended.stream, ended.reason, ended.frames))
            self._queue(ended.stream)

    def subscribe(self, sub: Subscription, published: dict[StreamKey, int]) -> None:
        """Switch to ``sub``: a stream newly subscribed to counts its frames from now on
        (``published``: the frames published so far per stream); what is waiting of a stream
        or preview no longer wanted is forgotten."""
        old, self.sub = self.sub, sub
        for stream in {*published, *self.slots}:
            s = self._slot(stream)
            if sub.wants(stream) and not old.wants(stream):
                s.seen, s.missed = published.get(stream, 0), 0
            elif not sub.wants(stream):
                s.frame = s.preview = None
            if not sub.preview:
                s.preview = None

    def _idle(self) -> bool:
        """Whether a ready frame may be written to the socket right now: the connection is
        open, nothing is waiting or being sent (order), the transport's buffer is empty (a
        client that is behind gets latest-wins instead of a queue) and writes are not paused.

        Writing bytes to the transport bypasses ``ws.send``; that is sound because a server's
        data frames are unmasked, the server never fragments, runs without extensions, and
        everything here runs on the connection's event loop between its other writes."""
        ws = self.ws
        return (self.busy_since is None and not self.waiting and not self.control
                and ws.protocol.state is State.OPEN and not ws.protocol.extensions
                and not ws.transport.is_closing()
                and ws.transport.get_write_buffer_size() == 0
                and not getattr(ws, "paused", True))

    def reply(self, message: dict[str, Any]) -> None:
        """Queue a control message (dropped when MAX_CONTROL are already waiting)."""
        if len(self.control) < MAX_CONTROL:
            self.control.append(protocol.dumps(message))
            self.wake.set()

    def malformed(self, error: protocol.ProtocolError) -> None:
        """Answer a message that broke the protocol; the first few are logged."""
        self.errors += 1
        if self.errors <= MAX_ERRORS_LOGGED:
            more = " (further ones not logged)" if self.errors == MAX_ERRORS_LOGGED else ""
            log.warning("ignored a message from websocket client %d: %.200s%s", self.id,
                        error, more)
        self.reply(protocol.error_message(str(error)))

    def end(self, reason: str) -> None:
        """Send ``bye`` with ``reason`` after what is already buffered, then close."""
        self.bye = reason
        self.wake.set()

    async def _send(self, data: str | bytes, text: bool | None = None) -> None:
        self.busy_since = time.monotonic()  # watched by the stall watchdog (cheaper than wait_for)
        await self.ws.send(data, text=text)
        self.busy_since = None

    async def pump(self, published: Callable[[], int], close_grace_s: float) -> None:
        """Send what the buffers hold, newest only, until ``bye`` (then close with 1000) or
        the connection ends; ``published()`` is the frame count the ``bye`` tells."""
        counts = self.counts
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                while self.control or self.waiting:
                    if self.control:
                        await self._send(self.control.popleft())
                    if not self.waiting:
                        continue
                    stream = next(iter(self.waiting))
                    del self.waiting[stream]
                    s = self.slots[stream]
                    item, preview, end = s.frame, s.preview, s.end
                    s.frame = s.preview = s.end = None
                    if item is not None:
                        dropped, s.missed = s.missed, 0
                        await self._send(item.text(self.sub, dropped), text=True)
                        self.sent += 1
                        counts["sent"] += 1
                    if preview is not None:
                        await self._send(preview)
                        counts["previews"] += 1
                    if end is not None:
                        await self._send(end)
                if self.bye is not None:
                    await self._send(protocol.dumps(protocol.bye_message(published(), self.bye)))
                    break
        except ConnectionClosed:
            return
        except Exception as exc:  # a bug: drop this client, keep serving the others
            log.error("websocket client %d: sending failed: %r", self.id, exc)
            self.ws.transport.abort()
            return
        try:
            await asyncio.wait_for(self.ws.close(CLOSE_END, self.bye), close_grace_s)
        except (asyncio.TimeoutError, ConnectionClosed):
            self.ws.transport.abort()

    def stuck_for(self, now: float) -> float:
        """Seconds the send in progress has made no progress (0 when none is)."""
        return 0.0 if self.busy_since is None else now - self.busy_since

    async def drop_stalled(self, timeout_s: float) -> None:
        """Disconnect this stalled client: a 4408 close if it still goes out, then abort."""
        self.stalled = True
        log.warning("websocket client %d stalled for %g s; disconnecting", self.id, timeout_s)
        try:
            await asyncio.wait_for(self.ws.close(CLOSE_STALLED, "stalled"), 0.5)
        except (asyncio.TimeoutError, ConnectionClosed):
            pass
        self.ws.transport.abort()
