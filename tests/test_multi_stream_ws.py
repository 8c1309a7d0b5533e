"""``tracker run --source A --source B --ws``: one websocket server for the whole run. The hello
lists the streams, every frame names its stream, a stream that ends or fails sends
``stream_end`` while the others go on, and a client may subscribe to some streams only.

Runs are gated, not timed: a source's frames wait until the client is registered (or has seen
another stream end), so what each client receives is the same on any machine. The server and
protocol pieces alone are tested in test_serve_streams.py."""

from __future__ import annotations

import asyncio
import csv
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from streaming import tracked_frame, validator, wait_until
from stubs import stub_tracker
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tracker.api import TrackerOptions, assembly, run_many
from tracker.cli.app import main
from tracker.config.schema import load_config
from tracker.serve import protocol
from tracker.serve.protocol import SourceMeta
from tracker.serve.server import CLOSE_END, StreamOptions, StreamServer

A = "lavfi:testsrc2=size=64x48:rate=30:duration=0.4"  # 12 frames
B = "lavfi:testsrc2=size=80x60:rate=30:duration=1"  # 30 frames
HANG_S = 60.0  # hang guard only


class Recorder:
    """A client on its own thread: connects (retrying until the server listens), optionally
    sends ``subscribe`` after the hello, and keeps every message; ``seen(pred)`` is an event set
    once a message matching ``pred`` arrived."""

    def __init__(self, url: str, subscribe: dict[str, Any] | None = None) -> None:
        self.url, self.subscribe = url, subscribe
        self.messages: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self._watch: list[tuple[Callable[[dict[str, Any]], bool], threading.Event]] = []
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def seen(self, pred: Callable[[dict[str, Any]], bool]) -> threading.Event:
        event = threading.Event()
        self._watch.append((pred, event))
        return event

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HANG_S
        while loop.time() < deadline:
            try:
                ws = await connect(self.url)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            try:
                async for raw in ws:
                    msg = json.loads(raw)
                    self.messages.append(msg)
                    if msg["type"] == "hello" and self.subscribe is not None:
                        await ws.send(json.dumps({"type": "subscribe", **self.subscribe}))
                    for pred, event in self._watch:
                        if pred(msg):
                            event.set()
            except ConnectionClosed:
                pass
            self.close_code = ws.close_code
            return

    def frames(self, stream: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "frame" and m["stream"] == stream]

    def ends(self) -> dict[str, dict[str, Any]]:
        return {m["stream"]: m for m in self.messages if m["type"] == "stream_end"}


def gate_sources(monkeypatch: pytest.MonkeyPatch,
                 gates: dict[str, Callable[[int], None]]) -> list[StreamServer]:
    """Make the source whose spec contains a key of ``gates`` call it before each frame (with
    the frame's index); returns the list the run's websocket server is put in."""
    servers: list[StreamServer] = []
    real_open, real_server = assembly.open_video, assembly.stream_server

    def open_video(cfg: Any) -> Any:
        video = real_open(cfg)
        gate = next((g for key, g in gates.items() if key in (cfg.run.source or "")), None)
        if gate is not None:
            frames = video.frames

            def gated() -> Iterator[Any]:
                for frame in frames():
                    gate(frame.index)
                    yield frame

            video.frames = gated
        return video

    def stream_server(*args: Any, **kwargs: Any) -> Any:
        srv = real_server(*args, **kwargs)
        servers.append(srv)
        return srv

    monkeypatch.setattr(assembly, "open_video", open_video)
    monkeypatch.setattr(assembly, "stream_server", stream_server)
    return servers


def when(condition: Callable[[], bool]) -> None:
    assert wait_until(condition, HANG_S), "hang guard"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def accounted(client: Recorder, stream: str) -> int:
    """Frames of ``stream`` the client received or was told it missed."""
    frames = client.frames(stream)
    return len(frames) + sum(m["dropped"] for m in frames)


# --- tracker run --source A --source B --ws ---------------------------------------------------


def test_one_server_carries_both_streams_and_one_ends_first(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    client = Recorder(f"ws://127.0.0.1:{port}/")
    a_ended = client.seen(lambda m: m["type"] == "stream_end" and m["stream"] == "stream0")

    def registered(_: int) -> None:  # frames flow once the client is served
        when(lambda: bool(servers) and servers[0].stats().clients == 1)

    def b_gate(index: int) -> None:
        registered(index)
        if index == 15:  # half of B waits until the client saw A end
            assert a_ended.wait(HANG_S), "hang guard"

    servers = gate_sources(monkeypatch, {"64x48": registered, "80x60": b_gate})
    client.thread.start()
    code = main(["run", "--source", A, "--source", B, "--ws", f"127.0.0.1:{port}",
                 "--policy", "block"], tracker_factory=stub_tracker)
    client.thread.join(HANG_S)
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"websocket ws://127.0.0.1:{port}/" in err and "2 streams, finished" in err

    messages, v = client.messages, validator()
    for m in messages:
        v.validate(m)
    hello = messages[0]
    assert hello["type"] == "hello" and hello["protocol"] == protocol.PROTOCOL_VERSION
    assert [(s["name"], s["source"]) for s in hello["streams"]] == [
        ("stream0", {"width": 64, "height": 48, "fps": 30.0}),
        ("stream1", {"width": 80, "height": 60, "fps": 30.0})]
    assert hello["streams"][1]["camera"] == {"fx": 80.0, "fy": 80.0, "cx": 40.0, "cy": 30.0}
    assert hello["streams"][0]["mirrored"] is False
    assert hello["source"] == hello["streams"][0]["source"]  # a one-stream client still reads it
    assert hello["subscription"]["streams"] is None

    # every frame names its stream and has that stream's size, numbers and face ids
    for name, (w, h) in (("stream0", (64, 48)), ("stream1", (80, 60))):
        frames = client.frames(name)
        assert frames and all((m["width"], m["height"]) == (w, h) for m in frames)
        indices = [m["frame"] for m in frames]
        assert indices == sorted(set(indices))
        assert {f["id"] for m in frames for f in m["faces"]} == {0}
    assert {m.get("stream") for m in messages if m["type"] == "frame"} == {"stream0", "stream1"}

    # stream0 ends while stream1 goes on; every published frame is delivered or counted
    ends = client.ends()
    assert ends["stream0"] == {"type": "stream_end", "stream": "stream0",
                               "reason": "end of stream", "frames": 12}
    assert ends["stream1"]["frames"] == 30 and ends["stream1"]["reason"] == "end of stream"
    assert accounted(client, "stream0") == 12 and accounted(client, "stream1") == 30
    at = {id(m): i for i, m in enumerate(messages)}
    a_end = at[id(ends["stream0"])]
    assert all(at[id(m)] < a_end for m in client.frames("stream0"))
    after = [m for m in client.frames("stream1") if at[id(m)] > a_end]
    assert after and after[-1]["frame"] == 29  # stream1 kept sending after stream0 ended
    assert at[id(ends["stream1"])] > at[id(after[-1])]
    assert messages[-1] == {"type": "bye", "reason": "end of stream", "frames": 42}
    assert client.close_code == CLOSE_END


def test_a_failed_stream_is_listed_and_a_client_gets_the_streams_it_asked_for(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clients: list[Recorder] = []

    def subscribed(_: int) -> None:  # frames flow once the client's subscribe is in force
        when(lambda: bool(servers) and [c.sub.streams for c in servers[0]._clients.values()]
             == [("stream2",)])

    servers = gate_sources(monkeypatch, {"64x48": subscribed, "80x60": subscribed})
    cfg = load_config(None).with_overrides({"pipeline.policy": "block"})
    tracker = stub_tracker(TrackerOptions(cfg))

    def serving(url: str) -> None:  # port 0: the server tells where it listens
        clients.append(Recorder(url, subscribe={"streams": ["stream2"], "fields": ["points"]}))
        clients[0].thread.start()

    report = run_many(tracker, [A, "tcp://127.0.0.1:1", B], ["ws://127.0.0.1:0"],
                      on_serve=serving)
    client = clients[0]
    client.thread.join(HANG_S)
    assert report.websocket == client.url and not client.url.endswith(":0/")
    assert [s.name for s in report.failed] == ["stream1"]

    messages, v = client.messages, validator()
    for m in messages:
        v.validate(m)
    hello = messages[0]
    assert [s["name"] for s in hello["streams"]] == ["stream0", "stream1", "stream2"]
    assert hello["streams"][1] == {"name": "stream1", "source": None, "camera": None,
                                   "mirrored": False}
    reply = next(m for m in messages if m["type"] == "subscribed")
    assert reply["streams"] == ["stream2"] and reply["fields"] == ["points"]
    frames = [m for m in messages if m["type"] == "frame"]
    assert frames and {m["stream"] for m in frames} == {"stream2"}
    assert all(set(f) == {"id", "points"} for m in frames for f in m["faces"])
    assert accounted(client, "stream2") == 30
    ends = client.ends()  # every stream's end is told, subscribed to or not
    assert ends["stream1"] == {"type": "stream_end", "stream": "stream1", "reason": "failed",
                               "frames": 0}
    assert messages.index(ends["stream1"]) < messages.index(frames[0])
    assert ends["stream0"]["frames"] == 12 and ends["stream2"]["frames"] == 30
    assert messages[-1] == {"type": "bye", "reason": "end of stream", "frames": 42}


# --- the Python client demo ------------------------------------------------------------------


def test_python_client_names_the_stream_and_picks_one(tmp_path: Path) -> None:
    client = Path(__file__).resolve().parents[1] / "demos" / "python_client.py"
    out = tmp_path / "faces.csv"
    srv = StreamServer(StreamOptions(port=0), streams=["left", "right"])
    srv.start()
    try:
        for name in ("left", "right"):
            srv.describe_stream(name, SourceMeta(320, 240, 30.0))
        proc = subprocess.Popen([sys.executable, str(client), srv.url, "--csv", str(out),
                                 "--streams", "right", "--quiet"],
                                stderr=subprocess.PIPE, text=True)
        when(lambda: [c.sub.streams for c in srv._clients.values()] == [("right",)])
        for i in range(4):
            for name in ("left", "right"):
                srv.publish(tracked_frame(i, faces=2), name)
        srv.end_stream("left", "end of stream")
        srv.end_stream("right", "end of stream")
    finally:
        srv.close()
    _, err = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 0, err
    rows = list(csv.reader(out.open()))
    assert rows[0][:3] == ["stream", "frame", "time"] and len(rows[0]) == 10 + 136
    assert rows[1:] and {r[0] for r in rows[1:]} == {"right"} and "3" in {r[1] for r in rows}
    assert "stream left ended: end of stream" in err and "stream right 320x240" in err
