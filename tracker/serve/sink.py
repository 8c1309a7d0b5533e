"""The pipeline's end of the websocket server: :class:`StreamSink` hands each tracked frame to a
started :class:`~tracker.serve.server.StreamServer`; :func:`describe` tells the user where to
connect."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tracker.runtime.pipeline import Stage
from tracker.types import TrackedFrame

if TYPE_CHECKING:
    from tracker.serve.server import StreamServer


class StreamSink(Stage):
    """Pipeline sink feeding a started :class:`StreamServer`. With one stream, closing it ends
    the stream (and the server); a sink of one of several streams (``stream``) leaves ending
    it to whoever runs the streams (:meth:`StreamServer.end_stream`, which knows why)."""

    name = "websocket"

    def __init__(self, server: StreamServer, stream: str | None = None) -> None:
        self.server = server
        self.stream = stream

    def process(self, item: TrackedFrame) -> None:
        """Hand the frame over; all encoding happens on the server's threads."""
        self.server.publish(item, self.stream)

    def close(self) -> None:
        if self.stream is None:
            self.server.close("end of stream")


def describe(server: StreamServer) -> str:
    """One line for the user: where to connect (and the demo page when served)."""
    text = f"websocket {server.url}"
    if server.options.serve_demo:
        text += f" (demo page {server.url.replace('ws://', 'http://', 1)})"
    return text
