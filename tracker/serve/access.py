"""Who may connect to the websocket server: bind addresses, Host and Origin checks, tokens.

Defaults are safe for a machine with a browser: the server binds loopback unless a host is
given; pages from other sites (``Origin``) and DNS-rebinding names (``Host``) are refused; a
token, when set, is compared in constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from websockets.http11 import Request

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def parse_address(text: str) -> tuple[str, int]:
    """``[HOST:]PORT`` (IPv6 as ``[::1]:PORT``) to ``(host, port)``; host defaults to loopback."""
    text = text.strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"bad websocket address {text!r}: write IPv6 hosts as [::1]:PORT")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"bad websocket address {text!r}: expected [HOST:]PORT, port 0-65535")
    return host or DEFAULT_HOST, int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only: the name ``localhost``, or an IP literal in
    127.0.0.0/8 or ::1 (IPv4-mapped too). Any other name is not loopback, however it starts:
    ``127.0.0.1.evil.example`` is somebody else's DNS name."""
    h = host.strip().strip("[]").lower().removesuffix(".")
    if h == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(h.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def host_of(netloc: str) -> str:
    """The host name in a ``Host`` header value ("" when malformed)."""
    try:
        return urlsplit(f"//{netloc}").hostname or ""
    except ValueError:
        return ""


def origin_allowed(origin: str | None, host_header: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether a browser page at ``origin`` may connect (None: not a browser, allowed).

    The server's own page (same origin as ``Host``) always may; otherwise ``allowed`` decides,
    and when it is empty, pages served from loopback addresses may.
    """
    if origin is None:
        return True
    o = origin.strip().rstrip("/").lower()
    if host_header and o in (f"http://{host_header.lower()}", f"https://{host_header.lower()}"):
        return True
    if "*" in allowed or o in (a.strip().rstrip("/").lower() for a in allowed):
        return True
    if allowed:
        return False
    try:
        parts = urlsplit(o)
        hostname = parts.hostname or ""
    except ValueError:  # not a URL (e.g. "http://[")
        return False
    return parts.scheme in ("http", "https") and is_loopback(hostname)


def request_token(request: Request) -> str | None:
    """The token a client gave: ``?token=`` query parameter or ``Authorization: Bearer``."""
    query = parse_qs(urlsplit(request.path).query)
    if query.get("token"):
        return query["token"][0]
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("X-Tracker-Token")


def token_ok(given: str | None, expected: str) -> bool:
    """Constant-time token comparison."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
