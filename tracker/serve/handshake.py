"""The HTTP side of the websocket server: header checks, who may open a websocket, the answers
to plain HTTP requests (the demo page), and rate-limited warnings about refused clients.

Order of checks (docs/protocol.md, *Connecting*): a request without exactly one ``Host`` header,
or with a repeated ``Origin``/token header, gets an HTTP 400 before any websocket handshake.
A websocket whose Host, Origin or token is not allowed is accepted and then closed with
4403 or 4401 (a browser sees close codes, never HTTP statuses); a plain HTTP request with a
disallowed Host gets a 403. Log lines name the peer, Host and Origin, never a token.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from tracker.serve.access import (
    host_of,
    is_loopback,
    origin_allowed,
    request_token,
    token_ok,
)
from tracker.serve.options import StreamOptions
from tracker.serve.protocol import CLOSE_FORBIDDEN, CLOSE_UNAUTHORIZED

log = logging.getLogger("tracker.serve.server")

_SINGLE_HEADERS = ("Origin", "Authorization", "X-Tracker-Token")  # at most once each


def shown(value: str | None, limit: int = 80) -> str:
    """A client-given value for a log line: quoted, escaped, cut to ``limit`` characters."""
    if value is None:
        return "(none)"
    return repr(value[:limit] + ("..." if len(value) > limit else ""))


def peer_of(connection: ServerConnection) -> str:
    """The client's IP address, for log lines."""
    address = connection.remote_address
    return str(address[0]) if address else "?"


class RefusalLog:
    """Warnings about refused clients: at most ``burst`` lines per ``period_s`` seconds; the
    refusals beyond that are counted and the count is told with the next line (or at close)."""

    def __init__(self, burst: int, period_s: float) -> None:
        self.burst, self.period_s = burst, period_s
        self._window = -float("inf")
        self._logged = 0
        self._unlogged = 0

    def warn(self, peer: str, what: str, subject: str = "websocket client") -> None:
        """Log (or count) one refusal of ``subject`` from ``peer`` because of ``what``."""
        now = time.monotonic()
        if now - self._window >= self.period_s:
            self._window, self._logged = now, 0
        if self._logged >= self.burst:
            self._unlogged += 1
            return
        self._logged += 1
        more = ""
        if self._unlogged:
            more = f" ({self._unlogged} earlier refusals not logged)"
            self._unlogged = 0
        if self._logged == self.burst:
            more += f" (further refusals in the next {self.period_s:g} s only counted)"
        log.warning("refused %s %s: %s%s", subject, peer, what, more)

    def flush(self) -> None:
        """Log the count of refusals not logged yet, if any."""
        if self._unlogged:
            log.warning("refused %d more clients (not logged one by one)", self._unlogged)
            self._unlogged = 0


def header_problem(headers: Headers) -> str | None:
    """Why a request's headers are unacceptable (a 400), or None: it must have exactly one
    ``Host`` and at most one ``Origin``, ``Authorization`` and ``X-Tracker-Token``."""
    hosts = headers.get_all("Host")
    if len(hosts) != 1:
        return f"{len(hosts)} Host headers" if hosts else "no Host header"
    for name in _SINGLE_HEADERS:
        if len(headers.get_all(name)) > 1:
            return f"{len(headers.get_all(name))} {name} headers"
    return None


def host_allowed(options: StreamOptions, request: Request) -> bool:
    """On a loopback bind, only loopback Host headers (defeats DNS rebinding). Call after
    :func:`header_problem` found none (exactly one Host)."""
    if not is_loopback(options.host):
        return True
    return is_loopback(host_of(request.headers["Host"]))


def refusal(options: StreamOptions, request: Request) -> tuple[int, str, str] | None:
    """``(close code, reason for the client, reason for the log)`` when this websocket client
    may not stay (Host, then Origin, then token), None when it may."""
    host = request.headers["Host"]
    if not host_allowed(options, request):
        return CLOSE_FORBIDDEN, "Host header not allowed", f"Host {shown(host)} not allowed"
    origin = request.headers.get("Origin")
    if not origin_allowed(origin, host, options.origins):
        return (CLOSE_FORBIDDEN, "origin not allowed (see --ws-origin)",
                f"origin {shown(origin)} not allowed (Host {shown(host)}; see --ws-origin)")
    if options.token:
        given = request_token(request)
        if not token_ok(given, options.token):
            what = "missing token" if given is None else "wrong token"
            return CLOSE_UNAUTHORIZED, "missing or wrong token", f"{what} (origin {shown(origin)})"
    return None


def http_response(connection: ServerConnection, request: Request, options: StreamOptions,
                  demo: dict[str, tuple[str, bytes]], refusals: RefusalLog) -> Response | None:
    """The answer to a request before any websocket handshake: None lets a websocket upgrade
    through; otherwise a 400 (bad headers), 403 (Host), 426 (no demo), 404 or a demo file."""
    problem = header_problem(request.headers)
    if problem is not None:
        refusals.warn(peer_of(connection), problem, "HTTP request from")
        return connection.respond(400, f"Bad request: {problem} (exactly one Host is needed)\n")
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return None
    if not host_allowed(options, request):
        refusals.warn(peer_of(connection), f"Host {shown(request.headers['Host'])} not allowed",
                      "HTTP request from")
        return connection.respond(403, "Host not allowed\n")
    if not demo:
        return connection.respond(426, "This is a tracker websocket endpoint; connect "
                                       "with a websocket client (or run with --serve-demo).\n")
    name = urlsplit(request.path).path.lstrip("/") or "index.html"
    if name not in demo:
        return connection.respond(404, "Not found\n")
    ctype, body = demo[name]
    headers = Headers([("Content-Type", ctype), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                       ("Connection", "close")])
    return Response(200, "OK", headers, body)
