"""Websocket server streaming landmarks (protocol v1, see docs/protocol.md) to live clients.

The server runs its own asyncio loop on a daemon thread, and encodes frames on a second one.
It serves one stream, or several (one run, several sources: ``streams``, named in every frame,
see :mod:`tracker.serve.streams`) through the same port, loop and encoder.
The pipeline's :class:`StreamSink` (:mod:`tracker.serve.sink`, re-exported here with
:func:`describe`) only hands each frame over (:meth:`StreamServer.publish`):
:mod:`tracker.serve.encoder` solves the head poses and makes the JSON text (once per frame and
distinct subscription) and the preview JPEG (once) off the pipeline's threads, so neither the
clients nor their number slow the pipeline down.

A client that keeps up (:mod:`tracker.serve.clients`) gets each encoded frame written to its
socket at once; otherwise its latest-wins buffers hold the encoded text: a frame it has not
taken yet is replaced by the next one of its stream and counted; the count goes out in the
``dropped`` field of the next frame of that stream it gets. A client whose pending send makes no progress for
``stall_timeout_s`` is disconnected (close code 4408).

Who may connect is decided by :mod:`tracker.serve.handshake` (with :mod:`tracker.serve.access`:
loopback bind by default, Host and Origin checks, token); refused clients are closed right after
the handshake (4401, 4403), and at most ``max_clients`` are served (more: 1013). Options live in
:mod:`tracker.serve.options`, close codes in :mod:`tracker.serve.protocol`; both are re-exported
here.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tracker.errors import StreamError
from tracker.serve import handshake, protocol
from tracker.serve.access import is_loopback
from tracker.serve.assets import load_demo
from tracker.serve.clients import Client
from tracker.serve.encoder import EncodedFrame, FrameEncoder, StreamEnded, sub_key
from tracker.serve.options import StreamConfig, StreamOptions
from tracker.serve.protocol import (
    CLOSE_END,
    CLOSE_FORBIDDEN,
    CLOSE_GOING_AWAY,
    CLOSE_STALLED,
    CLOSE_TOO_MANY,
    CLOSE_UNAUTHORIZED,
    ProtocolError,
    SourceMeta,
)
from tracker.serve.sink import StreamSink, describe
from tracker.serve.streams import StreamTable
from tracker.serve.wslog import ws_log as _ws_log
from tracker.types import TrackedFrame

__all__ = [
    "CLOSE_END", "CLOSE_FORBIDDEN", "CLOSE_GOING_AWAY", "CLOSE_STALLED", "CLOSE_TOO_MANY",
    "CLOSE_UNAUTHORIZED", "StreamConfig", "StreamError", "StreamOptions", "StreamServer",
    "StreamSink", "StreamStats", "describe",
]

log = logging.getLogger("tracker.serve.server")


@dataclass(frozen=True, slots=True)
class StreamStats:
    """Counters of a server (a snapshot)."""

    clients: int
    clients_total: int
    frames_published: int
    frames_sent: int
    frames_dropped: int
    previews_sent: int
    stalled: int
    refused: int
    malformed: int


class StreamServer:
    """Websocket server on its own threads; :meth:`start`, :meth:`publish`..., :meth:`close`.

    One stream: give its ``source``. Several: give their ``streams`` names instead, then
    :meth:`describe_stream` as each opens, :meth:`publish` with its name and
    :meth:`end_stream` when it ends.
    """

    def __init__(self, options: StreamOptions, source: SourceMeta | None = None,
                 streams: Sequence[str] | None = None) -> None:
        if (source is None) == (streams is None):
            raise ValueError("give the source of one stream or the names of several")
        self.options = options
        self.source = source
        self.streams = None if streams is None else StreamTable(streams)
        self.port = options.port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ready: asyncio.Event | None = None  # every stream opened or ended (hello)
        self._server: Server | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._encoder = FrameEncoder(options, self._deliver)
        self._clients: dict[int, Client] = {}
        self._slots = 0  # clients past the limit check: handshaking or connected (loop only)
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._closing = False
        self._bye_reason = "end of stream"
        self._demo: dict[str, tuple[str, bytes]] = {}
        self._refusals = handshake.RefusalLog(options.refusal_log_burst,
                                              options.refusal_log_period_s)
        self._n = dict.fromkeys(("clients_total", "sent", "dropped", "previews", "stalled",
                                 "refused", "malformed"), 0)

    # ---- pipeline side (any thread) ----------------------------------------------------------

    @property
    def url(self) -> str:
        host = f"[{self.options.host}]" if ":" in self.options.host else self.options.host
        return f"ws://{host}:{self.port}/"

    def start(self, timeout: float = 10.0) -> None:
        """Bind and start serving; raises :class:`StreamError` when that fails."""
        if self.options.serve_demo:
            try:
                self._demo = load_demo(self.options.demo_dir)
            except FileNotFoundError as exc:
                raise StreamError(f"--serve-demo: {exc}") from None
        self._thread = threading.Thread(target=self._thread_main, name="tracker-ws", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise StreamError(f"websocket server did not start within {timeout:g} s")
        if self._start_error is not None:
            self._thread.join(1.0)
            raise StreamError(
                f"cannot serve websocket on {self.options.host}:{self.options.port}: "
                f"{self._start_error}"
            )
        self._encoder.start()
        if not is_loopback(self.options.host) and not self.options.token:
            log.warning("websocket on %s without a token: anyone who can reach it can connect "
                        "(use --ws-token)", self.options.host)

    def publish(self, tracked: TrackedFrame, stream: str | None = None) -> None:
        """Offer one frame (of ``stream``, on a server of several) to every client: only
        hands it to the encoder thread (O(1))."""
        if self._loop is None or self._closing:
            return
        self._encoder.offer(tracked, stream)

    def describe_stream(self, name: str, source: SourceMeta) -> None:
        """Stream ``name`` opened: what the hello tells about it (a server of several)."""
        self._table().describe(name, source)
        self._call(self._check_ready)

    def end_stream(self, name: str, reason: str) -> None:
        """Stream ``name`` ended (``end of stream``, ``failed``, ``stopped``): clients get
        ``stream_end`` after its last frame; the other streams go on."""
        self._table().ending(name)
        self._encoder.end(name, reason)
        self._call(self._check_ready)

    def _table(self) -> StreamTable:
        if self.streams is None:
            raise ValueError("this server has one stream")
        return self.streams

    def _call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop (nothing when it is not running)."""
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(fn)
            except RuntimeError:  # the loop already stopped
                pass

    def close(self, reason: str = "end of stream") -> None:
        """Send ``bye`` to every client, close the connections and stop (idempotent)."""
        if self._closing:
            return
        self._closing = True
        self._bye_reason = reason
        self._encoder.close(self.options.close_grace_s)  # the last frame goes out before bye
        if self._stop is not None:
            self._call(self._stop.set)
        if self._thread is not None:
            self._thread.join(self.options.close_grace_s + 5.0)

    def stats(self) -> StreamStats:
        n = self._n
        return StreamStats(len(self._clients), n["clients_total"], self._encoder.published,
                           n["sent"], n["dropped"], n["previews"], n["stalled"], n["refused"],
                           n["malformed"])

    # ---- loop side ---------------------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            if not self._started.is_set():
                self._start_error = exc
                self._started.set()
            else:
                log.error("websocket server failed: %s", exc)

    async def _main(self) -> None:
        o = self.options
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        try:
            self._server = await serve(
                self._handler, o.host, o.port, process_request=self._process_request,
                max_size=o.max_message_bytes, compression=None, close_timeout=o.close_grace_s,
                logger=_ws_log,
            )
        except OSError as exc:
            raise StreamError(exc.strerror or str(exc)) from None
        self.port = self._server.sockets[0].getsockname()[1]
        self._loop = asyncio.get_running_loop()
        self._check_ready()
        self._started.set()
        watchdog = asyncio.create_task(self._watch_stalls())
        await self._stop.wait()
        await self._shutdown()
        watchdog.cancel()
        self._refusals.flush()

    async def _shutdown(self) -> None:
        self._closing = True
        if self._ready is not None:
            self._ready.set()  # clients waiting for their hello are closed (1001)
        clients = list(self._clients.values())
        for c in clients:
            c.end(self._bye_reason)
        done = [asyncio.ensure_future(c.ws.wait_closed()) for c in clients]
        if done:
            await asyncio.wait(done, timeout=self.options.close_grace_s)
        for c in clients:
            if c.ws.transport is not None and not c.ws.transport.is_closing():
                c.ws.transport.abort()
        assert self._server is not None
        self._server.close(close_connections=False)
        await asyncio.wait([asyncio.ensure_future(self._server.wait_closed())], timeout=1.0)

    def _deliver(self, item: EncodedFrame | StreamEnded) -> None:
        """Encoder thread: pass an encoded frame or a stream's end to the loop."""
        if isinstance(item, StreamEnded):
            self._call(lambda: self._stream_ended(item))
        else:
            self._call(lambda: self._offer(item))

    def _check_ready(self) -> None:
        if self._ready is not None and (self.streams is None or self.streams.ready):
            self._ready.set()

    def _stream_ended(self, ended: StreamEnded) -> None:
        assert self.streams is not None
        self.streams.ended[ended.stream] = ended
        for c in self._clients.values():
            c.stream_ended(ended)

    def _offer(self, item: EncodedFrame) -> None:
        missed = 0
        for c in self._clients.values():
            try:
                missed += c.offer(item)
            except Exception as exc:  # a bug: drop this client, keep serving the others
                log.error("websocket client %d: sending failed: %r", c.id, exc)
                c.ws.transport.abort()
        self._n["dropped"] += missed

    def _audience_changed(self) -> None:
        """Tell the encoder which subscriptions to encode for and whether previews are wanted."""
        clients = self._clients.values()
        self._encoder.audience = tuple(
            {(sub_key(c.sub), c.sub.streams, c.sub.preview): c.sub for c in clients}.values())

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        return handshake.http_response(connection, request, self.options, self._demo,
                                       self._refusals)

    async def _refuse(self, ws: ServerConnection, code: int, reason: str, detail: str) -> None:
        self._n["refused"] += 1
        self._refusals.warn(handshake.peer_of(ws), detail)
        await ws.close(code, reason)

    async def _handler(self, ws: ServerConnection) -> None:
        o, req = self.options, ws.request
        assert req is not None
        refused = handshake.refusal(o, req)
        if refused is not None:
            return await self._refuse(ws, *refused)
        if self._closing:
            return await ws.close(CLOSE_GOING_AWAY, "stream ended")
        if self._slots >= o.max_clients:
            reason = f"too many clients (at most {o.max_clients})"
            return await self._refuse(ws, CLOSE_TOO_MANY, reason, reason)
        self._slots += 1  # taken in the same loop step as the check above: no await between
        try:
            await self._serve_client(ws)
        finally:
            self._slots -= 1

    async def _serve_client(self, ws: ServerConnection) -> None:
        o = self.options
        sock = ws.transport.get_extra_info("socket")
        if sock is not None and o.send_buffer_bytes > 0:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, o.send_buffer_bytes)
        sub = protocol.Subscription(preview=o.preview)
        preview = {"max_fps": o.preview_fps, "width": o.preview_width} if o.preview else None
        assert self._ready is not None
        await self._ready.wait()  # a server of several streams: each opened or ended
        listing = None if self.streams is None else self.streams.listing()
        source = self.source if self.streams is None else self.streams.first()
        if self._closing or source is None:
            return await ws.close(CLOSE_GOING_AWAY, "stream ended")
        client_id = next(self._ids)
        hello = protocol.hello_message(source, client_id, sub, preview, listing)
        try:
            await asyncio.wait_for(ws.send(protocol.dumps(hello)), o.stall_timeout_s)
        except (asyncio.TimeoutError, ConnectionClosed):
            ws.transport.abort()
            return
        c = Client(client_id, ws, sub, seen=self._encoder.snapshot(), counts=self._n)
        self._clients[c.id] = c
        self._n["clients_total"] += 1
        self._audience_changed()
        for ended in self.streams.ended.values() if self.streams is not None else ():
            c.stream_ended(ended)  # streams that ended before this client was registered
        if self._closing:  # the stream ended while this client was being greeted
            c.end(self._bye_reason)
        log.info("websocket client %d connected from %s", c.id, ws.remote_address)
        sender = asyncio.create_task(c.pump(lambda: self._encoder.published, o.close_grace_s))
        try:
            async for message in ws:
                self._on_message(c, message)
        except ConnectionClosed:
            pass
        finally:
            self._clients.pop(c.id, None)
            self._audience_changed()
            if not sender.done():
                sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            log.info("websocket client %d left (sent %d, dropped %d)", c.id, c.sent, c.dropped)

    def _on_message(self, c: Client, message: str | bytes) -> None:
        try:
            names = None if self.streams is None else self.streams.names
            sub = protocol.parse_subscribe(protocol.parse_message(message), c.sub, names)
        except ProtocolError as exc:
            self._n["malformed"] += 1
            c.malformed(exc)
            return
        c.subscribe(replace(sub, preview=sub.preview and self.options.preview),
                    self._encoder.snapshot())
        self._audience_changed()
        c.reply(protocol.subscribed_message(c.sub, streams=self.streams is not None))

    async def _watch_stalls(self) -> None:
        """Drops clients whose send in progress has been stuck for ``stall_timeout_s``."""
        timeout = self.options.stall_timeout_s
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            now = time.monotonic()
            for c in list(self._clients.values()):
                if not c.stalled and c.stuck_for(now) > timeout:
                    c.stalled = True
                    self._n["stalled"] += 1
                    task = asyncio.create_task(c.drop_stalled(timeout))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
