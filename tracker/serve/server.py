"""Websocket server streaming landmarks (protocol v1, see docs/protocol.md) to live clients.

The server runs its own asyncio loop on a daemon thread. The pipeline's :class:`StreamSink`
calls :meth:`StreamServer.publish` on its own thread; that only computes head poses, maybe a
preview JPEG, and hands one item to the loop, so clients can never slow the pipeline down.

Every client has a latest-wins slot: a frame it has not taken yet is replaced by the next one
and counted; the count goes out in the ``dropped`` field of the next frame it gets. A client
whose pending send makes no progress for ``stall_timeout_s`` is disconnected (close code 4408).
JSON is encoded lazily, once per frame and subscription, only for frames that are really sent.

Who may connect is decided by :mod:`tracker.serve.access` (loopback bind by default, Host and
Origin checks, token); refused clients are closed right after the handshake (4401, 4403).
Preview JPEGs and the demo page's files come from :mod:`tracker.serve.assets`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tracker.errors import StreamError  # noqa: F401 (re-exported)
from tracker.outputs.headpose import estimate_pose
from tracker.runtime.pipeline import Stage
from tracker.serve import protocol
from tracker.serve.access import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    host_of,
    is_loopback,
    origin_allowed,
    parse_address,
    request_token,
    token_ok,
)
from tracker.serve.assets import DEMO_DIR, load_demo, preview_jpeg
from tracker.serve.protocol import ProtocolError, SourceMeta, Subscription
from tracker.types import TrackedFrame

log = logging.getLogger("tracker.serve.server")

CLOSE_END = 1000  # end of stream, after ``bye``
CLOSE_GOING_AWAY = 1001  # the server stopped before the client took its ``bye``
CLOSE_TOO_MANY = 1013  # max_clients reached
CLOSE_UNAUTHORIZED = 4401  # missing or wrong token
CLOSE_FORBIDDEN = 4403  # origin or Host not allowed
CLOSE_STALLED = 4408  # stalled past the timeout

_MAX_ERRORS_LOGGED = 3  # malformed messages logged per client (then only counted)
_MAX_CONTROL = 8  # replies queued per client (more are dropped)


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """How to serve; :class:`StreamConfig` is the part a run configures."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0: any free port (tests)
    token: str | None = None  # clients must give it (None = no token)
    origins: tuple[str, ...] = ()  # allowed browser origins; () = loopback pages; "*" = any
    preview: bool = False  # also send annotated JPEG previews
    preview_fps: float = 10.0  # at most this many previews a second
    preview_width: int = 480  # previews are scaled down to this width
    jpeg_quality: int = 75
    serve_demo: bool = False  # serve the browser demo at http://HOST:PORT/
    demo_dir: Path = DEMO_DIR
    stall_timeout_s: float = 10.0  # disconnect a client whose send makes no progress this long
    max_clients: int = 64
    max_message_bytes: int = 4096
    send_buffer_bytes: int = 64 * 1024  # kernel send buffer per client: bounds stale data
    close_grace_s: float = 2.0  # how long ending waits for clients to take their bye


_SERVE = StreamOptions()


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """Websocket streaming of a run (the ``[stream]`` config section, docs/protocol.md): the
    configurable part of :class:`StreamOptions`, with its defaults, in config types."""

    ws: str | None = None  # [HOST:]PORT to serve on ("8765" = 127.0.0.1:8765); None = off
    token: str | None = _SERVE.token  # clients must give it (also env var TRACKER_WS_TOKEN)
    origins: str = ""  # browser origins allowed, comma-separated; "" = loopback pages; "*" = any
    preview: bool = _SERVE.preview  # also send annotated JPEG previews
    preview_fps: float = _SERVE.preview_fps  # at most this many previews a second
    preview_width: int = _SERVE.preview_width  # previews are scaled down to this width
    serve_demo: bool = _SERVE.serve_demo  # serve the browser demo (tracker/serve/demo) at HOST:PORT
    stall_timeout_s: float = _SERVE.stall_timeout_s  # disconnect a client stalled this long

    @property
    def enabled(self) -> bool:
        """Whether a server is asked for (a ``ws`` address or the demo page)."""
        return bool(self.ws or self.serve_demo)

    def options(self) -> StreamOptions:
        """The server's options; the demo alone serves on the default address. ValueError
        when ``ws`` is not ``[HOST:]PORT``."""
        host, port = parse_address(self.ws or f"{_SERVE.host}:{_SERVE.port}")
        return replace(
            _SERVE, host=host, port=port, token=self.token or None,
            origins=tuple(o.strip() for o in self.origins.split(",") if o.strip()),
            preview=self.preview, preview_fps=self.preview_fps, preview_width=self.preview_width,
            serve_demo=self.serve_demo, stall_timeout_s=self.stall_timeout_s,
        )


class _Published:
    """One published frame; JSON text made lazily per subscription, shared by all clients."""

    __slots__ = ("base", "faces", "preview", "_texts")

    def __init__(self, base: tuple[int, float, float, int, int], faces: list[dict[str, Any]],
                 preview: bytes | None) -> None:
        self.base = base
        self.faces = faces
        self.preview = preview
        self._texts: dict[tuple[Any, ...], str] = {}

    def text(self, sub: Subscription, dropped: int) -> str:
        key = (sub.fields, sub.faces)
        head = self._texts.get(key)
        if head is None:
            msg = protocol.frame_message(*self.base, self.faces, sub)
            del msg["dropped"]
            head = protocol.dumps(msg)[:-1] + ',"dropped":'
            self._texts[key] = head
        return f"{head}{dropped}}}"


@dataclass(eq=False)
class _Client:
    id: int
    ws: ServerConnection
    sub: Subscription
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    frame: _Published | None = None
    preview: bytes | None = None
    control: deque[str] = field(default_factory=deque)
    dropped: int = 0
    sent: int = 0
    errors: int = 0
    bye: str | None = None
    busy_since: float | None = None  # monotonic start of the send in progress
    stalled: bool = False


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


class _OneLine(logging.Filter):
    """Keeps the websockets library's log records to one line (no tracebacks)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()}: {record.exc_info[1]}"
            record.args = ()
        record.exc_info = None
        record.exc_text = None
        return True


_ws_log = logging.getLogger("tracker.serve.server.websockets")
_ws_log.addFilter(_OneLine())


class StreamServer:
    """Websocket server on its own thread; :meth:`start`, :meth:`publish`..., :meth:`close`."""

    def __init__(self, options: StreamOptions, source: SourceMeta) -> None:
        self.options = options
        self.source = source
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._server: Server | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._clients: dict[int, _Client] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._closing = False
        self._bye_reason = "end of stream"
        self._demo: dict[str, tuple[str, bytes]] = {}
        self._preview_clients = 0
        self._last_preview = -math.inf
        self.port = options.port
        self._n = dict.fromkeys(
            ("clients_total", "published", "sent", "dropped", "previews", "stalled", "refused",
             "malformed"), 0)

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
        if not is_loopback(self.options.host) and not self.options.token:
            log.warning("websocket on %s without a token: anyone who can reach it can connect "
                        "(use --ws-token)", self.options.host)

    def publish(self, tracked: TrackedFrame) -> None:
        """Offer one frame to every client; never blocks on clients."""
        loop = self._loop
        if loop is None or self._closing:
            return
        self._n["published"] += 1
        if not self._clients:
            return
        f = tracked.frame
        h, w = f.image.shape[:2]
        faces = [
            protocol.face_dict(face, estimate_pose(face.points, w, h, face.confidence))
            for face in tracked.faces
        ]
        packet = None
        now = time.monotonic()
        o = self.options
        if o.preview and self._preview_clients and now - self._last_preview >= 1.0 / o.preview_fps:
            self._last_preview = now
            packet = protocol.preview_packet(*preview_jpeg(tracked, o.preview_width,
                                                           o.jpeg_quality))
        item = _Published((f.index, f.time, f.wall_time, w, h), faces, packet)
        try:
            loop.call_soon_threadsafe(self._offer, item)
        except RuntimeError:  # the loop already stopped
            pass

    def close(self, reason: str = "end of stream") -> None:
        """Send ``bye`` to every client, close the connections and stop (idempotent)."""
        if self._closing:
            return
        self._closing = True
        self._bye_reason = reason
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None:
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass
        if thread is not None:
            thread.join(self.options.close_grace_s + 5.0)

    def stats(self) -> StreamStats:
        n = self._n
        return StreamStats(len(self._clients), n["clients_total"], n["published"], n["sent"],
                           n["dropped"], n["previews"], n["stalled"], n["refused"], n["malformed"])

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
        self._started.set()
        watchdog = asyncio.create_task(self._watch_stalls())
        await self._stop.wait()
        await self._shutdown()
        watchdog.cancel()

    async def _shutdown(self) -> None:
        self._closing = True
        clients = list(self._clients.values())
        for c in clients:
            c.bye = self._bye_reason
            c.wake.set()
        done = [asyncio.ensure_future(c.ws.wait_closed()) for c in clients]
        if done:
            await asyncio.wait(done, timeout=self.options.close_grace_s)
        for c in clients:
            if c.ws.transport is not None and not c.ws.transport.is_closing():
                c.ws.transport.abort()
        assert self._server is not None
        self._server.close(close_connections=False)
        await asyncio.wait([asyncio.ensure_future(self._server.wait_closed())], timeout=1.0)

    def _offer(self, item: _Published) -> None:
        for c in self._clients.values():
            if c.bye is not None:
                continue
            if c.frame is not None:
                c.dropped += 1
                self._n["dropped"] += 1
            c.frame = item
            if item.preview is not None and c.sub.preview:
                c.preview = item.preview
            c.wake.set()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Answer plain HTTP requests (the demo page when served); let websockets through."""
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        if not self._host_ok(request):
            return connection.respond(403, "Host not allowed\n")
        if not self._demo:
            return connection.respond(426, "This is a tracker websocket endpoint; connect "
                                           "with a websocket client (or run with --serve-demo).\n")
        name = urlsplit(request.path).path.lstrip("/") or "index.html"
        if name not in self._demo:
            return connection.respond(404, "Not found\n")
        ctype, body = self._demo[name]
        headers = Headers([("Content-Type", ctype), ("Content-Length", str(len(body))),
                           ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                           ("Connection", "close")])
        return Response(200, "OK", headers, body)

    def _host_ok(self, request: Request) -> bool:
        """On a loopback bind, only loopback Host headers (defeats DNS rebinding)."""
        if not is_loopback(self.options.host):
            return True
        return is_loopback(host_of(request.headers.get("Host", "")))

    async def _refuse(self, ws: ServerConnection, code: int, reason: str) -> None:
        self._n["refused"] += 1
        peer = ws.remote_address[0] if ws.remote_address else "?"
        log.warning("refused websocket client %s: %s", peer, reason)
        await ws.close(code, reason)

    async def _handler(self, ws: ServerConnection) -> None:
        o, req = self.options, ws.request
        assert req is not None
        origin = req.headers.get("Origin")
        if not self._host_ok(req):
            return await self._refuse(ws, CLOSE_FORBIDDEN, "Host header not allowed")
        if not origin_allowed(origin, req.headers.get("Host"), o.origins):
            return await self._refuse(ws, CLOSE_FORBIDDEN,
                                      f"origin {origin} not allowed (see --ws-origin)")
        if o.token and not token_ok(request_token(req), o.token):
            return await self._refuse(ws, CLOSE_UNAUTHORIZED, "missing or wrong token")
        if self._closing:
            return await ws.close(CLOSE_GOING_AWAY, "stream ended")
        if len(self._clients) >= o.max_clients:
            return await self._refuse(ws, CLOSE_TOO_MANY, "too many clients")
        sock = ws.transport.get_extra_info("socket")
        if sock is not None and o.send_buffer_bytes > 0:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, o.send_buffer_bytes)
        c = _Client(next(self._ids), ws, Subscription(preview=o.preview))
        preview = {"max_fps": o.preview_fps, "width": o.preview_width} if o.preview else None
        hello = protocol.hello_message(self.source, c.id, c.sub, preview)
        try:
            await asyncio.wait_for(ws.send(protocol.dumps(hello)), o.stall_timeout_s)
        except (asyncio.TimeoutError, ConnectionClosed):
            ws.transport.abort()
            return None
        self._clients[c.id] = c
        self._n["clients_total"] += 1
        self._preview_clients += c.sub.preview
        log.info("websocket client %d connected from %s", c.id, ws.remote_address)
        sender = asyncio.create_task(self._sender(c))
        try:
            async for message in ws:
                self._on_message(c, message)
        except ConnectionClosed:
            pass
        finally:
            self._clients.pop(c.id, None)
            self._preview_clients -= c.sub.preview
            if not sender.done():
                sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            log.info("websocket client %d left (sent %d, dropped %d)", c.id, c.sent, c.dropped)
        return None

    def _on_message(self, c: _Client, message: str | bytes) -> None:
        try:
            if isinstance(message, bytes):
                raise ProtocolError("binary messages are not accepted")
            try:
                data = json.loads(message)
            except ValueError:
                raise ProtocolError("not valid JSON") from None
            sub = protocol.parse_subscribe(data, c.sub)
        except ProtocolError as exc:
            self._n["malformed"] += 1
            c.errors += 1
            if c.errors <= _MAX_ERRORS_LOGGED:
                more = " (further ones not logged)" if c.errors == _MAX_ERRORS_LOGGED else ""
                log.warning("ignored a message from websocket client %d: %s%s", c.id, exc, more)
            self._queue(c, protocol.error_message(str(exc)))
            return
        sub = replace(sub, preview=sub.preview and self.options.preview)
        self._preview_clients += sub.preview - c.sub.preview
        c.sub = sub
        if not sub.preview:
            c.preview = None
        self._queue(c, protocol.subscribed_message(sub))

    def _queue(self, c: _Client, message: dict[str, Any]) -> None:
        if len(c.control) < _MAX_CONTROL:
            c.control.append(protocol.dumps(message))
            c.wake.set()

    async def _send(self, c: _Client, data: str | bytes) -> None:
        c.busy_since = time.monotonic()  # watched by _watch_stalls (cheaper than wait_for)
        await c.ws.send(data)
        c.busy_since = None

    async def _watch_stalls(self) -> None:
        """Drops clients whose send in progress has been stuck for ``stall_timeout_s``."""
        timeout = self.options.stall_timeout_s
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            now = time.monotonic()
            for c in list(self._clients.values()):
                if not c.stalled and c.busy_since is not None and now - c.busy_since > timeout:
                    c.stalled = True
                    task = asyncio.create_task(self._drop_stalled(c))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    async def _drop_stalled(self, c: _Client) -> None:
        self._n["stalled"] += 1
        log.warning("websocket client %d stalled for %g s; disconnecting", c.id,
                    self.options.stall_timeout_s)
        try:
            await asyncio.wait_for(c.ws.close(CLOSE_STALLED, "stalled"), 0.5)
        except (asyncio.TimeoutError, ConnectionClosed):
            pass
        c.ws.transport.abort()

    async def _sender(self, c: _Client) -> None:
        """Sends what the client's slots hold, newest only; ends with bye or on a stall."""
        try:
            while True:
                await c.wake.wait()
                c.wake.clear()
                while c.control or c.frame is not None or c.preview is not None:
                    if c.control:
                        await self._send(c, c.control.popleft())
                    if c.frame is not None:
                        item, c.frame = c.frame, None
                        dropped, c.dropped = c.dropped, 0
                        await self._send(c, item.text(c.sub, dropped))
                        c.sent += 1
                        self._n["sent"] += 1
                    if c.preview is not None:
                        data, c.preview = c.preview, None
                        await self._send(c, data)
                        self._n["previews"] += 1
                if c.bye is not None:
                    await self._send(c, protocol.dumps(protocol.bye_message(
                        self._n["published"], c.bye)))
                    break
        except ConnectionClosed:
            return
        except Exception as exc:  # a bug: drop this client, keep serving the others
            log.error("websocket client %d: sending failed: %r", c.id, exc)
            c.ws.transport.abort()
            return
        try:
            await asyncio.wait_for(c.ws.close(CLOSE_END, c.bye), self.options.close_grace_s)
        except (asyncio.TimeoutError, ConnectionClosed):
            c.ws.transport.abort()


class StreamSink(Stage):
    """Pipeline sink feeding a started :class:`StreamServer`; closing it ends the stream."""

    name = "websocket"

    def __init__(self, server: StreamServer) -> None:
        self.server = server

    def process(self, item: TrackedFrame) -> None:
        self.server.publish(item)

    def close(self) -> None:
        self.server.close("end of stream")


def describe(server: StreamServer) -> str:
    """One line for the user: where to connect (and the demo page when served)."""
    text = f"websocket {server.url}"
    if server.options.serve_demo:
        text += f" (demo page {server.url.replace('ws://', 'http://', 1)})"
    return text
