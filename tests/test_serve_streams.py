"""The websocket server of several streams, piece by piece: latest-wins per stream for a client
that is behind, a stalled client holding up no stream, previews and messages naming their
stream (and validating against the schema), subscribing to streams, and a single-stream server
that sends exactly what it always did."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import jsonschema
import pytest
from streaming import server as single_server
from streaming import tracked_frame, validator, wait_until
from websockets.asyncio.client import connect

from tracker.serve import protocol
from tracker.serve.clients import Client
from tracker.serve.encoder import EncodedFrame, StreamEnded
from tracker.serve.protocol import ProtocolError, SourceMeta, Subscription
from tracker.serve.server import StreamOptions, StreamServer

HANG_S = 60.0  # hang guard only


def _encoded(seq: int, stream: str) -> EncodedFrame:
    return EncodedFrame(seq, (seq - 1, 0.0, 0.0, 4, 4), [], None, stream)


class _Socket:
    """Records what a client's task sends."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, data: str | bytes, text: bool | None = None) -> None:
        self.sent.append(json.loads(data))

    async def close(self, code: int, reason: str) -> None:
        pass


def test_a_client_behind_keeps_the_newest_frame_of_each_stream() -> None:
    ws = _Socket()
    counts = dict.fromkeys(("sent", "previews"), 0)
    c = Client(1, ws, Subscription(), seen={"a": 0, "b": 0}, counts=counts)  # type: ignore[arg-type]
    c.busy_since = 0.0  # a send in progress: everything is buffered
    missed = [c.offer(_encoded(i, s)) for i in (1, 2, 3) for s in ("b", "a")]
    assert sum(missed) == 4  # two frames of each stream replaced
    c.stream_ended(StreamEnded("a", "end of stream", 3))
    c.busy_since = None
    c.end("end of stream")
    asyncio.run(asyncio.wait_for(c.pump(lambda: 6, 1.0), HANG_S))
    assert [(m["type"], m.get("stream"), m.get("frame"), m.get("dropped")) for m in ws.sent] == [
        ("frame", "b", 2, 2),  # b's slot filled first, so it goes first
        ("frame", "a", 2, 2),
        ("stream_end", "a", None, None),
        ("bye", None, None, None)]


def test_a_stalled_client_holds_up_neither_stream() -> None:
    n = 100
    srv = StreamServer(StreamOptions(port=0, stall_timeout_s=0.5, send_buffer_bytes=4096),
                       streams=["a", "b"])
    srv.start()
    try:
        for name in ("a", "b"):
            srv.describe_stream(name, SourceMeta(320, 240, 30.0))

        async def main() -> list[dict[str, Any]]:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # a client that stops
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # reading (max_queue=1)
            sock.connect(("127.0.0.1", srv.port))
            async with connect(srv.url, sock=sock, max_queue=1, close_timeout=1), \
                    connect(srv.url) as fast:
                assert json.loads(await fast.recv())["type"] == "hello"
                assert await asyncio.to_thread(wait_until, lambda: srv.stats().clients == 2)
                got = []
                for i in range(n):  # lockstep with the fast client: it gets every frame
                    for name in ("a", "b"):
                        srv.publish(tracked_frame(i, faces=3), name)
                        got.append(json.loads(await fast.recv()))
                assert await asyncio.to_thread(wait_until, lambda: srv.stats().stalled == 1)
                return got

        got = asyncio.run(asyncio.wait_for(main(), HANG_S))
        stats = srv.stats()
    finally:
        srv.close()
    assert [(m["stream"], m["frame"]) for m in got] == [
        (s, i) for i in range(n) for s in ("a", "b")]
    assert all(m["dropped"] == 0 for m in got)
    assert stats.frames_published == 2 * n and stats.frames_dropped > 0 and stats.stalled == 1


def test_messages_validate_and_a_single_stream_server_adds_no_stream_keys() -> None:
    v = validator()
    tf = tracked_frame(0)
    faces = [protocol.face_dict(f) for f in tf.faces]
    meta, sub = SourceMeta(320, 240, 30.0, mirrored=True), Subscription(streams=("a",))
    multi = [
        protocol.hello_message(meta, 1, sub, None, [("a", meta), ("b", None)]),
        protocol.frame_message(0, 0.0, 1.7e9, 320, 240, faces, sub, 1, stream="a"),
        protocol.subscribed_message(sub, streams=True),
        protocol.stream_end_message("b", "failed", 0),
        {"type": "subscribe", "streams": ["a"]},
        {"type": "preview", "stream": "a", "frame": 0, "time": 0.0, "width": 4, "height": 3,
         "scale": 0.5},
    ]
    single = [
        protocol.hello_message(meta, 1, Subscription(), None),
        protocol.frame_message(0, 0.0, 1.7e9, 320, 240, faces, Subscription()),
        protocol.subscribed_message(Subscription()),
    ]
    for m in multi + single:
        v.validate(json.loads(protocol.dumps(m)))
    assert multi[0]["streams"][0] == {"name": "a", **protocol.source_fields(meta)}
    assert multi[0]["subscription"]["streams"] == ["a"] and multi[1]["stream"] == "a"
    assert "streams" not in single[0] and "streams" not in single[0]["subscription"]
    assert "stream" not in single[1] and "streams" not in single[2]
    with pytest.raises(jsonschema.ValidationError):
        v.validate({**multi[1], "stream": "bad name/"})


def test_subscribe_to_streams() -> None:
    names = ("a", "b", "c")
    got = protocol.parse_subscribe({"type": "subscribe", "streams": ["c", "a", "c"]},
                                   Subscription(), names)
    assert got.streams == ("a", "c") and got.wants("a") and not got.wants("b")
    assert protocol.parse_subscribe({"type": "subscribe", "streams": None}, got,
                                    names).streams is None
    assert protocol.parse_subscribe({"type": "subscribe", "preview": False}, got,
                                    names).streams == ("a", "c")
    with pytest.raises(ProtocolError, match=r"unknown streams \['x'\]; known: a, b, c"):
        protocol.parse_subscribe({"type": "subscribe", "streams": ["x"]}, got, names)
    with pytest.raises(ProtocolError, match="list of stream names"):
        protocol.parse_subscribe({"type": "subscribe", "streams": "a"}, got, names)
    with pytest.raises(ProtocolError, match="unknown subscribe keys: streams"):
        protocol.parse_subscribe({"type": "subscribe", "streams": ["a"]}, Subscription())


def test_previews_name_their_stream() -> None:
    srv = StreamServer(StreamOptions(port=0, preview=True, preview_fps=1000.0), streams="ab")
    srv.start()
    try:
        for name in "ab":
            srv.describe_stream(name, SourceMeta(320, 240, 30.0))

        async def main() -> list[Any]:
            async with connect(srv.url) as ws:
                await ws.recv()
                assert await asyncio.to_thread(wait_until, lambda: srv.stats().clients == 1)
                for name in "ba":
                    srv.publish(tracked_frame(0), name)
                return [await ws.recv() for _ in range(4)]

        got = asyncio.run(asyncio.wait_for(main(), HANG_S))
    finally:
        srv.close()
    assert [json.loads(m)["stream"] for m in got[::2]] == ["b", "a"]
    headers = [protocol.parse_preview(m)[0] for m in got[1::2]]
    for h in headers:
        validator().validate(h)
    assert [(h["type"], h["stream"]) for h in headers] == [("preview", "b"), ("preview", "a")]


def test_a_single_stream_server_refuses_stream_calls() -> None:
    with single_server() as srv, pytest.raises(ValueError, match="one stream"):
        srv.end_stream("a", "failed")
    with pytest.raises(ValueError, match="source of one stream or the names"):
        StreamServer(StreamOptions(port=0))
    with pytest.raises(ValueError, match="distinct"):
        StreamServer(StreamOptions(port=0), streams=["a", "a"])
