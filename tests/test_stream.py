"""The websocket server: protocol messages, real clients, security, latest-wins and stalls."""

from __future__ import annotations

import asyncio
import csv
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from streaming import WATCHDOG_S, face_points, recv_json, run, server, tracked_frame, validator, wait_until
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tracker.io.source import open_source
from tracker.runtime.pipeline import FunctionStage, Pipeline
from tracker.serve import protocol
from tracker.serve.access import origin_allowed, parse_address
from tracker.serve.protocol import ProtocolError, SourceMeta, Subscription
from tracker.serve.server import (
    CLOSE_END,
    CLOSE_FORBIDDEN,
    CLOSE_STALLED,
    CLOSE_UNAUTHORIZED,
    StreamError,
    StreamOptions,
    StreamServer,
    StreamSink,
)
from tracker.types import Box


async def collect(ws: ClientConnection) -> list[Any]:
    """Every message until the server closes the connection (JSON decoded, binary as is)."""
    out: list[Any] = []
    try:
        async for msg in ws:
            out.append(json.loads(msg) if isinstance(msg, str) else msg)
    except ConnectionClosed:
        pass
    return out


async def close_code(ws: ClientConnection) -> int | None:
    """The close code the server sent (after reading whatever came first)."""
    await collect(ws)
    return ws.close_code


# ---- addresses and origins -------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("8765", ("127.0.0.1", 8765)),
    (":9000", ("127.0.0.1", 9000)),
    ("localhost:1", ("localhost", 1)),
    ("0.0.0.0:8765", ("0.0.0.0", 8765)),
    ("[::1]:80", ("::1", 80)),
    (" 0 ", ("127.0.0.1", 0)),
])
def test_address_parses(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "70000", "::1:80", "host:", "1.2.3.4:-1"])
def test_bad_address_is_a_clear_error(text: str) -> None:
    with pytest.raises(ValueError, match="websocket address"):
        parse_address(text)


@pytest.mark.parametrize("origin, host, allowed, ok", [
    (None, "127.0.0.1:8765", (), True),  # not a browser
    ("http://127.0.0.1:8765", "127.0.0.1:8765", (), True),  # the served demo page
    ("http://localhost:3000", "127.0.0.1:8765", (), True),  # a loopback page
    ("http://127.0.0.2:3000", "127.0.0.1:8765", (), True),
    ("https://evil.example", "127.0.0.1:8765", (), False),
    ("null", "127.0.0.1:8765", (), False),  # file:// pages and sandboxed frames
    ("null", "127.0.0.1:8765", ("null",), True),
    ("https://app.example", "127.0.0.1:8765", ("https://app.example/",), True),
    ("http://localhost:3000", "127.0.0.1:8765", ("https://app.example",), False),
    ("https://evil.example", "127.0.0.1:8765", ("*",), True),
])
def test_origin_allow_list(origin: str | None, host: str, allowed: tuple[str, ...],
                           ok: bool) -> None:
    assert origin_allowed(origin, host, allowed) is ok


# ---- protocol messages -----------------------------------------------------------------------

def test_messages_validate_against_the_schema() -> None:
    v = validator()
    tf = tracked_frame(3, faces=2)
    faces = [protocol.face_dict(f, None) for f in tf.faces]
    from tracker.outputs.headpose import estimate_pose

    faces[0] = protocol.face_dict(tf.faces[0], estimate_pose(tf.faces[0].points, 320, 240))
    sub = Subscription()
    messages = [
        protocol.hello_message(SourceMeta(320, 240, 29.97), 1, sub, {"max_fps": 10, "width": 480}),
        protocol.hello_message(SourceMeta(320, 240, 0.0), 2, Subscription(preview=False), None),
        protocol.frame_message(3, 0.1, 1.7e9, 320, 240, faces, sub, dropped=2),
        protocol.frame_message(3, 0.1, 1.7e9, 320, 240, faces, Subscription(("points",), (1,))),
        protocol.frame_message(4, 0.2, 1.7e9, 320, 240, [], sub),
        protocol.subscribed_message(sub),
        protocol.error_message("not valid JSON"),
        protocol.bye_message(10, "end of stream"),
        {"type": "subscribe", "fields": ["points"], "faces": [0], "preview": False},
    ]
    for message in messages:
        v.validate(json.loads(protocol.dumps(message)))
    assert messages[3]["faces"] == [{"id": 1, "points": faces[1]["points"]}]


def test_nan_points_become_null() -> None:
    tf = tracked_frame(0)
    face = tf.faces[0]
    pts = face.points.copy()
    pts[5] = np.nan
    d = protocol.face_dict(type(face)(0, 0.0, 0, pts, face.confidence, face.presence, face.box),
                           None)
    assert d["points"][5] == [None, None]
    validator().validate(json.loads(protocol.dumps(
        protocol.frame_message(0, 0.0, 0.0, 320, 240, [d]))))


@pytest.mark.parametrize("message, expected", [
    ({"type": "subscribe"}, Subscription()),
    ({"type": "subscribe", "fields": ["points"]}, Subscription(fields=("points",))),
    ({"type": "subscribe", "fields": ["pose", "box"]}, Subscription(fields=("box", "pose"))),
    ({"type": "subscribe", "faces": [2, 0, 2]}, Subscription(faces=(0, 2))),
    ({"type": "subscribe", "faces": None, "preview": False}, Subscription(preview=False)),
])
def test_subscribe_parses(message: dict[str, Any], expected: Subscription) -> None:
    assert protocol.parse_subscribe(message, Subscription()) == expected


@pytest.mark.parametrize("message, match", [
    ([], "JSON object"),
    ({"type": "hello"}, "unknown message type"),
    ({"type": "subscribe", "colour": 1}, "unknown subscribe keys"),
    ({"type": "subscribe", "fields": "points"}, "list of strings"),
    ({"type": "subscribe", "fields": ["nose"]}, "unknown fields"),
    ({"type": "subscribe", "faces": [-1]}, "face ids"),
    ({"type": "subscribe", "faces": [True]}, "face ids"),
    ({"type": "subscribe", "faces": list(range(65))}, "face ids"),
    ({"type": "subscribe", "preview": 1}, "true or false"),
])
def test_bad_subscribe_is_refused(message: Any, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        protocol.parse_subscribe(message, Subscription())


def test_preview_packet_round_trips() -> None:
    header = {"type": "preview", "frame": 1, "time": 0.0, "width": 2, "height": 2, "scale": 1}
    assert protocol.parse_preview(protocol.preview_packet(header, b"\xff\xd8jpeg")) == (
        header, b"\xff\xd8jpeg")
    for bad in (b"", b"\x00\x00\x00\x09{}", b"\x00\x00\x00\x02{x"):
        with pytest.raises(ProtocolError):
            protocol.parse_preview(bad)


# ---- a server with real clients --------------------------------------------------------------

def test_hello_frames_bye_in_order_and_every_frame_accounted_for() -> None:
    n = 40
    v = validator()
    with server() as srv:
        async def main() -> tuple[list[Any], int | None]:
            async with connect(srv.url) as ws:
                hello = await recv_json(ws)
                assert wait_until(lambda: srv.stats().clients == 1)

                def publish() -> None:
                    for i in range(n):
                        srv.publish(tracked_frame(i, faces=2))
                    srv.close()

                threading.Thread(target=publish).start()
                return [hello, *await collect(ws)], ws.close_code

        messages, code = run(main())
    kinds = [m["type"] for m in messages]
    assert kinds[0] == "hello" and kinds[-1] == "bye" and set(kinds[1:-1]) == {"frame"}
    for m in messages:
        v.validate(m)
    frames = messages[1:-1]
    indices = [m["frame"] for m in frames]
    assert indices == sorted(set(indices)) and indices[-1] == n - 1
    assert len(frames) + sum(m["dropped"] for m in frames) == n  # delivered or reported
    assert messages[-1]["frames"] == n and code == CLOSE_END
    assert len(frames[-1]["faces"]) == 2 and frames[-1]["faces"][0]["pose"] is not None
    hello = messages[0]
    assert hello["protocol"] == protocol.PROTOCOL_VERSION
    assert hello["source"] == {"width": 320, "height": 240, "fps": 30.0}
    assert len(hello["landmarks"]["names"]) == 68 and len(hello["landmarks"]["connections"]) == 63


@pytest.mark.parametrize("query, headers, accepted", [
    ("", {}, False),
    ("?token=wrong", {}, False),
    ("?token=s3cret", {}, True),
    ("", {"Authorization": "Bearer s3cret"}, True),
    ("", {"Authorization": "Bearer nope"}, False),
    ("", {"X-Tracker-Token": "s3cret"}, True),
])
def test_token_is_required_when_set(query: str, headers: dict[str, str], accepted: bool) -> None:
    with server(token="s3cret") as srv:
        async def main() -> tuple[str | None, int | None]:
            async with connect(srv.url + query, additional_headers=headers) as ws:
                messages = await collect_first(ws)
                return messages, ws.close_code

        first, code = run(main())
        if accepted:
            assert first == "hello"
        else:
            assert first is None and code == CLOSE_UNAUTHORIZED
            assert srv.stats().refused == 1


async def collect_first(ws: ClientConnection) -> str | None:
    """Type of the first message, then close; None when the server closed first."""
    try:
        msg = json.loads(await ws.recv())
    except ConnectionClosed:
        return None
    await ws.close()
    return msg["type"]


@pytest.mark.parametrize("origin, origins, accepted", [
    ("https://evil.example", (), False),
    ("http://localhost:5173", (), True),
    ("https://app.example", ("https://app.example",), True),
    ("https://evil.example", ("https://app.example",), False),
])
def test_browser_origins_are_checked(origin: str, origins: tuple[str, ...],
                                     accepted: bool) -> None:
    with server(origins=origins) as srv:
        async def main() -> tuple[str | None, int | None]:
            async with connect(srv.url, origin=origin) as ws:  # type: ignore[arg-type]
                return await collect_first(ws), ws.close_code

        first, code = run(main())
    assert (first == "hello") is accepted
    if not accepted:
        assert code == CLOSE_FORBIDDEN


def test_dns_rebinding_host_is_refused_on_loopback() -> None:
    with server() as srv:
        async def main() -> tuple[str | None, int | None]:
            sock = socket.create_connection(("127.0.0.1", srv.port))
            async with connect(f"ws://rebind.example:{srv.port}/", sock=sock) as ws:
                return await collect_first(ws), ws.close_code

        assert run(main()) == (None, CLOSE_FORBIDDEN)


@pytest.mark.parametrize("bad", [
    "not json", "[1, 2]", '{"type": "hello"}', '{"type": "subscribe", "fields": ["nose"]}',
    b"\x00\x01binary",
])
def test_malformed_message_is_answered_and_ignored(bad: str | bytes) -> None:
    with server() as srv:
        async def main() -> list[dict[str, Any]]:
            async with connect(srv.url) as ws:
                await recv_json(ws)
                await ws.send(bad)
                error = await recv_json(ws)
                srv.publish(tracked_frame(0))  # the connection still works
                frame = await recv_json(ws)
                return [error, frame]

        error, frame = run(main())
        assert error["type"] == "error" and error["message"]
        assert frame["type"] == "frame" and frame["frame"] == 0
        assert srv.stats().malformed == 1


def test_oversized_client_message_closes_with_1009() -> None:
    with server(max_message_bytes=1024) as srv:
        async def main() -> int | None:
            async with connect(srv.url) as ws:
                await recv_json(ws)
                await ws.send(json.dumps({"type": "subscribe", "faces": [0] * 2000}))
                return await close_code(ws)

        assert run(main()) == 1009


@pytest.mark.parametrize("subscribe, keys, ids", [
    ({"fields": ["points"]}, {"id", "points"}, [0, 1, 2]),
    ({"fields": ["pose", "presence"], "faces": [1]}, {"id", "pose", "presence"}, [1]),
    ({"faces": [0, 2]}, {"id", *protocol.FACE_FIELDS}, [0, 2]),
    ({"faces": [7]}, set(), []),
])
def test_subscribe_picks_fields_and_faces(subscribe: dict[str, Any], keys: set[str],
                                          ids: list[int]) -> None:
    with server() as srv:
        async def main() -> tuple[dict[str, Any], dict[str, Any]]:
            async with connect(srv.url) as ws:
                await recv_json(ws)
                await ws.send(json.dumps({"type": "subscribe", **subscribe}))
                reply = await recv_json(ws)
                srv.publish(tracked_frame(0, faces=3))
                return reply, await recv_json(ws)

        reply, frame = run(main())
    assert reply["type"] == "subscribed"
    assert [f["id"] for f in frame["faces"]] == ids
    assert all(set(f) == keys for f in frame["faces"])


def _stalled_socket(port: int) -> socket.socket:
    """A connected socket with a tiny receive buffer: with max_queue=1 the client stops reading."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", port))
    return sock


def test_stalled_client_misses_frames_and_is_dropped_without_slowing_a_fast_one() -> None:
    n = 200
    with server(stall_timeout_s=0.5, send_buffer_bytes=4096) as srv:
        async def main() -> list[dict[str, Any]]:
            sock = _stalled_socket(srv.port)
            async with connect(srv.url, sock=sock, max_queue=1, close_timeout=1) as slow, \
                    connect(srv.url) as fast:
                await recv_json(fast)
                assert wait_until(lambda: srv.stats().clients == 2)
                got = []
                for i in range(n):  # lockstep with the fast client: it must get every frame
                    srv.publish(tracked_frame(i, faces=3))
                    got.append(await recv_json(fast))
                assert await asyncio.to_thread(wait_until, lambda: srv.stats().stalled == 1)
                assert await asyncio.to_thread(wait_until, lambda: srv.stats().clients == 1)
                del slow
                return got

        got = run(main())
        stats = srv.stats()
    assert [m["frame"] for m in got] == list(range(n))
    assert all(m["dropped"] == 0 for m in got)
    assert stats.frames_dropped > 0  # all of them the stalled client's
    assert stats.stalled == 1 and stats.clients_total == 2


def test_stall_close_code_reaches_a_client_that_reads_again() -> None:
    """A client that stopped reading and resumes late learns it was dropped for stalling."""
    with server(stall_timeout_s=0.3, send_buffer_bytes=4096) as srv:
        async def main() -> int | None:
            sock = _stalled_socket(srv.port)
            async with connect(srv.url, sock=sock, max_queue=1, close_timeout=1) as slow:
                assert wait_until(lambda: srv.stats().clients == 1)
                # publish until the buffers are full and the send stalls (the encoder takes
                # the newest frame only, so a fixed count may not fill them on a busy machine)
                frame = tracked_frame(0, faces=3)
                for _ in range(20_000):
                    if srv.stats().stalled:
                        break
                    srv.publish(frame)
                    await asyncio.sleep(0.001)
                assert await asyncio.to_thread(wait_until, lambda: srv.stats().stalled == 1)
                return await close_code(slow)

        code = run(main())
    # the close frame is usually lost in the full buffers: then the connection is just reset
    assert code in (CLOSE_STALLED, 1006)


def test_preview_frames_are_jpegs_of_the_annotated_frame() -> None:
    width, height = 640, 360
    image = np.full((height, width, 3), 40, np.uint8)
    with server(width, height, preview=True, preview_width=320, preview_fps=1000.0) as srv:
        async def main() -> list[Any]:
            async with connect(srv.url) as ws:
                hello = await recv_json(ws)
                assert hello["preview"]["width"] == 320 and hello["subscription"]["preview"]
                assert wait_until(lambda: srv.stats().clients == 1)
                srv.publish(tracked_frame(0, width, height, image=image))
                return [await ws.recv(), await ws.recv()]

        frame_text, packet = run(main())
    assert json.loads(frame_text)["type"] == "frame"
    header, jpeg = protocol.parse_preview(packet)
    validator().validate(header)
    assert (header["frame"], header["width"], header["height"]) == (0, 320, 180)
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (180, 320, 3)
    assert img.max() > 150  # landmarks were drawn on the grey frame


def test_preview_off_sends_no_binary_messages() -> None:
    with server(preview=True, preview_fps=1000.0) as srv:
        async def main() -> list[Any]:
            async with connect(srv.url) as ws:
                await recv_json(ws)
                await ws.send('{"type": "subscribe", "preview": false}')
                await recv_json(ws)
                for i in range(3):
                    srv.publish(tracked_frame(i))
                threading.Thread(target=srv.close).start()
                return await collect(ws)

        messages = run(main())
    assert all(isinstance(m, dict) for m in messages) and messages[-1]["type"] == "bye"


@pytest.mark.parametrize("demo, path, status, needle", [
    (True, "/", 200, b"<canvas"),
    (True, "/app.js", 200, b"WebSocket"),
    (True, "/../tracker/stream.py", 404, b"Not found"),
    (True, "/nope.html", 404, b"Not found"),
    (False, "/", 426, b"websocket"),
])
def test_http_requests(demo: bool, path: str, status: int, needle: bytes) -> None:
    with server(serve_demo=demo) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
    assert resp.status == status and needle in body


def test_demo_page_refuses_a_rebound_host() -> None:
    with server(serve_demo=True) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.request("GET", "/", headers={"Host": f"rebind.example:{srv.port}"})
        assert conn.getresponse().status == 403
        conn.close()


def test_port_in_use_is_a_clear_error() -> None:
    with server() as first:
        srv = StreamServer(StreamOptions(port=first.port), first.source)
        with pytest.raises(StreamError, match="cannot serve websocket on 127.0.0.1"):
            srv.start()


def test_demo_dir_missing_is_a_clear_error(tmp_path: Any) -> None:
    srv = StreamServer(StreamOptions(port=0, serve_demo=True, demo_dir=tmp_path),
                       SourceMeta(2, 2, 1))
    with pytest.raises(StreamError, match="demo page not found"):
        srv.start()


# ---- the pipeline sink -----------------------------------------------------------------------

def test_pipeline_over_a_synthetic_source_streams_to_a_client() -> None:
    """lavfi test source -> injected track stage (synthetic faces) -> websocket sink."""
    source = open_source("lavfi:testsrc2=size=320x240:rate=30:duration=1")
    v = validator()

    def track(frame: Any) -> Any:
        tf = tracked_frame(frame.index, 320, 240)
        return type(tf)(frame, tf.faces)

    with server() as srv:
        p = Pipeline()
        frames, tracked = p.channel("frames", 8), p.channel("ws", 32)
        p.add(source, outputs=[frames])
        p.add(FunctionStage("track", track), input=frames, outputs=[tracked])
        p.add(StreamSink(srv), input=tracked)

        async def main() -> tuple[list[Any], int | None]:
            async with connect(srv.url) as ws:
                hello = await recv_json(ws)
                assert wait_until(lambda: srv.stats().clients == 1)
                runner = threading.Thread(target=p.run)
                runner.start()
                messages = await collect(ws)
                await asyncio.to_thread(runner.join)
                return [hello, *messages], ws.close_code

        messages, code = run(main())
    for m in messages:
        v.validate(m)
    frames_ = [m for m in messages if m["type"] == "frame"]
    assert messages[-1] == {"type": "bye", "reason": "end of stream", "frames": 30}
    assert frames_[-1]["frame"] == 29 and code == CLOSE_END
    assert len(frames_) + sum(m["dropped"] for m in frames_) == 30
    assert frames_[0]["wall_time"] > 1e9 and frames_[-1]["time"] == pytest.approx(29 / 30)


# ---- the Python client demo ------------------------------------------------------------------

CLIENT = Path(__file__).resolve().parents[1] / "demos" / "python_client.py"


@pytest.mark.parametrize("token, given, code", [(None, None, 0), ("s3cret", "s3cret", 0),
                                                 ("s3cret", "wrong", 2)])
def test_python_client_writes_csv(tmp_path: Path, token: str | None, given: str | None,
                                  code: int) -> None:
    out = tmp_path / "faces.csv"
    env = {**os.environ, "TRACKER_WS_TOKEN": given or ""}
    # previews on: the client's subscribe turns them off, which tells it has been applied
    with server(token=token, preview=True) as srv:
        proc = subprocess.Popen([sys.executable, str(CLIENT), srv.url, "--csv", str(out),
                                 "--quiet"], env=env, stderr=subprocess.PIPE, text=True)
        if code == 0:
            assert wait_until(lambda: srv.stats().clients == 1)
            assert wait_until(lambda: all(  # the client's subscribe has been applied
                c.sub.preview is False for c in srv._clients.values()))
            for i in range(5):
                srv.publish(tracked_frame(i, faces=2))
            srv.close()
        _, err = proc.communicate(timeout=WATCHDOG_S)
    assert proc.returncode == code, err
    if code == 0:
        rows = list(csv.reader(out.open()))
        assert rows[0][:9] == ["frame", "time", "wall_time", "latency_ms", "face", "presence",
                               "yaw", "pitch", "roll"]
        assert len(rows[0]) == 9 + 136
        received = {int(r[0]) for r in rows[1:]}
        assert 4 in received and len(rows) - 1 == 2 * len(received)
        assert "stream ended" in err
    else:
        assert "token" in err


# ---- tracker run --ws ------------------------------------------------------------------------

@dataclass(frozen=True)
class _Pred:
    points: np.ndarray
    confidence: np.ndarray
    presence: float
    box: Box


class _CentreDetector:
    def detect(self, image: np.ndarray) -> list[Box]:
        h, w = image.shape[:2]
        return [Box(w * 0.3, h * 0.25, w * 0.7, h * 0.8, 0.9)]


class _ModelLandmarker:
    """The generic 3D face seen frontally in the middle of the frame."""

    def predict(self, image: np.ndarray, boxes: Any) -> list[_Pred]:
        h, w = image.shape[:2]
        pts = face_points(w, h)
        return [_Pred(pts, np.full(68, 0.9, np.float32), 0.9, b) for b in boxes]


def stub_tracker(options: Any) -> Any:
    """A real Tracker with the stub models injected (the CLI's ``tracker_factory`` seam)."""
    from tracker.api import Tracker

    return Tracker(options, detector=_CentreDetector(), landmarker=_ModelLandmarker())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_tracker_run_ws_streams_to_a_client(capsys: pytest.CaptureFixture[str]) -> None:
    from tracker.cli.app import main

    port = _free_port()
    result: dict[str, Any] = {}

    def client() -> None:
        async def go() -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + WATCHDOG_S
            while loop.time() < deadline:
                try:
                    ws = await connect(f"ws://127.0.0.1:{port}/?token=t0k")
                except OSError:
                    await asyncio.sleep(0.02)
                    continue
                result["messages"] = [await recv_json(ws), *await collect(ws)]
                result["code"] = ws.close_code
                return

        asyncio.run(go())

    t = threading.Thread(target=client)
    t.start()
    # the realtime filter paces the test source like a camera (2 s)
    code = main(tracker_factory=stub_tracker, argv=["run", "--source",
                "lavfi:testsrc2=size=320x240:rate=30:duration=2,realtime",
                 "--ws", f"127.0.0.1:{port}", "--ws-token", "t0k"])
    t.join(WATCHDOG_S)
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"ws://127.0.0.1:{port}/" in err
    messages = result["messages"]
    assert messages[0]["type"] == "hello" and messages[0]["source"]["width"] == 320
    assert messages[-1] == {"type": "bye", "reason": "end of stream", "frames": 60}
    frames = [m for m in messages if m["type"] == "frame"]
    assert frames and frames[-1]["frame"] == 59 and result["code"] == CLOSE_END
    pose = frames[-1]["faces"][0]["pose"]
    assert abs(pose["yaw"]) < 3 and abs(pose["pitch"]) < 3 and abs(pose["roll"]) < 3


@pytest.mark.parametrize("args, code, needle", [
    (["--ws", "70000"], 3, "stream.ws"),
    (["--ws-preview"], 2, "need --ws"),
    (["--ws-origin", "https://a.example"], 2, "need --ws"),
    (["--ws", "127.0.0.1:{busy}"], 6, "cannot serve websocket"),
])
def test_tracker_run_ws_errors_are_one_line(args: list[str], code: int, needle: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from tracker.cli.app import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        argv = [a.format(busy=busy.getsockname()[1]) for a in args]
        rc = main(["run", "--source", "lavfi:testsrc2=size=64x48:rate=30:duration=1", *argv],
                  tracker_factory=stub_tracker)
    err = capsys.readouterr().err
    assert rc == code and needle in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err


WEIGHTS = Path(__file__).resolve().parents[1] / "tracker" / "weights" / "rcn_lite.pt"
CLIP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos" / \
    "short_hamilton_clip.mp4"


@pytest.mark.skipif(not (WEIGHTS.exists() and CLIP.exists()),
                    reason="needs the default weights and ../shared/data")
def test_real_landmarks_on_a_real_clip_reach_a_client(capsys: pytest.CaptureFixture[str]) -> None:
    """The real detector and landmark engine on the shared clip, streamed to a client."""
    from tracker.cli.app import main

    port, n = _free_port(), 110  # frames 85-212 are a medium shot of the singer facing the camera
    result: dict[str, Any] = {}

    def client() -> None:
        async def go() -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 120
            while loop.time() < deadline:
                try:
                    ws = await connect(f"ws://127.0.0.1:{port}/")
                except OSError:
                    await asyncio.sleep(0.01)
                    continue
                result["messages"] = [await recv_json(ws), *await collect(ws)]
                return

        asyncio.run(go())

    t = threading.Thread(target=client)
    t.start()
    code = main(["run", str(CLIP), "--max-frames", str(n), "--ws", f"127.0.0.1:{port}"])
    t.join(130)
    assert code == 0, capsys.readouterr().err
    messages = result["messages"]
    v = validator()
    for m in messages:
        v.validate(m)
    assert messages[-1]["type"] == "bye" and messages[-1]["frames"] == n
    frames = [m for m in messages if m["type"] == "frame"]
    faces = [f for m in frames for f in m["faces"]]
    assert frames[-1]["frame"] == n - 1 and faces  # the singer is found
    for face in faces:
        xs = [p[0] for p in face["points"]]
        # frame pixels (not crop pixels); a face cut by the frame edge may reach a little past it
        assert -64 <= min(xs) and max(xs) <= 704 and max(xs) - min(xs) > 20
        assert face["pose"] is not None and -180 <= face["pose"]["yaw"] <= 180
    facing = [f for m in frames if m["frame"] >= 90 for f in m["faces"]]
    assert facing, "the singer facing the camera is tracked"
    assert all(abs(f["pose"]["yaw"]) < 45 for f in facing)  # profile shots come before frame 85
