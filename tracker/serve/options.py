"""How the websocket server serves: :class:`StreamOptions` (everything, for the server and tests)
and :class:`StreamConfig` (the part a run configures: the ``[stream]`` config section).

Defaults are safe: loopback bind, no previews, no demo page, at most 64 clients, client messages
of at most 4 KiB, a client whose send makes no progress for 10 s is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from tracker.serve.access import DEFAULT_HOST, DEFAULT_PORT, parse_address
from tracker.serve.assets import DEMO_DIR


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
    max_clients: int = 64  # more are closed with 1013 right after the handshake
    max_message_bytes: int = 4096
    send_buffer_bytes: int = 64 * 1024  # kernel send buffer per client: bounds stale data
    close_grace_s: float = 2.0  # how long ending waits for clients to take their bye
    refusal_log_burst: int = 5  # refusals logged per refusal_log_period_s (then only counted)
    refusal_log_period_s: float = 60.0


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
