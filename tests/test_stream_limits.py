"""Websocket server under hostile or heavy use: the client limit, malformed input, refusal logs,
and per-frame work that does not grow with the number of clients (real servers on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from typing import Any

import pytest
from streaming import WATCHDOG_S, recv_json, run, server, tracked_frame, wait_until
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tracker.serve.server import (
    CLOSE_FORBIDDEN,
    CLOSE_TOO_MANY,
    CLOSE_UNAUTHORIZED,
    StreamSink,
)

LOGGER = "tracker.serve.server"


async def first_or_close(url: str, **kwargs: Any) -> tuple[str | None, int | None, str]:
    """(first message type or None, close code, close reason) of one connection attempt."""
    async with connect(url, open_timeout=WATCHDOG_S, **kwargs) as ws:
        try:
            first = json.loads(await ws.recv())["type"]
        except ConnectionClosed:
            return None, ws.close_code, ws.close_reason or ""
        return first, None, ""


def raw_http(port: int, lines: list[str]) -> tuple[int, bytes]:
    """Send a hand-written HTTP request; (status, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def upgrade_request(hosts: list[str]) -> list[str]:
    return ["GET / HTTP/1.1", *(f"Host: {h}" for h in hosts), "Upgrade: websocket",
            "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13"]


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno == logging.WARNING]


# ---- 1. the client limit ---------------------------------------------------------------------

def test_client_limit_holds_for_concurrent_connects() -> None:
    limit, extra = 5, 20
    with server(max_clients=limit) as srv:
        async def main() -> list[tuple[str | None, int | None, str]]:
            conns = [connect(srv.url, open_timeout=WATCHDOG_S) for _ in range(limit + extra)]
            sockets = await asyncio.gather(*conns)  # all handshakes at once
            try:
                async def first(ws: ClientConnection) -> tuple[str | None, int | None, str]:
                    try:
                        return json.loads(await ws.recv())["type"], None, ""
                    except ConnectionClosed:
                        return None, ws.close_code, ws.close_reason or ""

                return await asyncio.gather(*(first(ws) for ws in sockets))
            finally:
                await asyncio.gather(*(ws.close() for ws in sockets))

        results = run(main())
        accepted = [r for r in results if r[0] == "hello"]
        refused = [r for r in results if r[0] is None]
        assert len(accepted) == limit and len(refused) == extra
        assert all(code == CLOSE_TOO_MANY and "too many clients" in reason
                   for _, code, reason in refused)
        assert srv.stats().refused == extra
        # the slots are given back: a new client gets in once the others left
        assert wait_until(lambda: srv.stats().clients == 0)
        assert run(first_or_close(srv.url))[0] == "hello"


# ---- 3. malformed input ----------------------------------------------------------------------

@pytest.mark.parametrize("depth, max_bytes", [(4000, 4096), (100_000, 200_000)])
def test_deeply_nested_json_is_answered_not_fatal(depth: int, max_bytes: int) -> None:
    with server(max_message_bytes=max_bytes) as srv:
        async def main() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
            async with connect(srv.url) as bad, connect(srv.url) as other:
                await recv_json(bad)
                await recv_json(other)
                await bad.send("[" * depth)
                error = await recv_json(bad)
                srv.publish(tracked_frame(0))  # both connections still work
                return error, await recv_json(bad), await recv_json(other)

        error, frame, other = run(main())
        assert error["type"] == "error" and "nested" in error["message"]
        assert frame["type"] == other["type"] == "frame"
        assert srv.stats().malformed == 1


@pytest.mark.parametrize("hosts", [["127.0.0.1", "127.0.0.1"], ["127.0.0.1", "evil.example"], []])
@pytest.mark.parametrize("upgrade", [True, False])
def test_duplicate_or_missing_host_header_is_a_400(hosts: list[str], upgrade: bool,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    with server(serve_demo=True) as srv:
        lines = upgrade_request(hosts) if upgrade else ["GET / HTTP/1.1",
                                                        *(f"Host: {h}" for h in hosts)]
        status, body = raw_http(srv.port, lines)
        assert status == 400 and b"Host" in body
        assert run(first_or_close(srv.url))[0] == "hello"  # the server keeps serving
    assert any("Host" in w for w in warnings_of(caplog))
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)


def test_duplicate_origin_header_is_a_400() -> None:
    with server() as srv:
        lines = [*upgrade_request([f"127.0.0.1:{srv.port}"]), "Origin: http://localhost:1",
                 "Origin: https://evil.example"]
        assert raw_http(srv.port, lines)[0] == 400


# ---- 4. refusals are logged ------------------------------------------------------------------

def test_origin_refusal_logs_one_warning_naming_the_origin(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    with server() as srv:
        first, code, reason = run(first_or_close(srv.url, origin="https://evil.example"))
    assert (first, code) == (None, CLOSE_FORBIDDEN) and "origin" in reason
    lines = warnings_of(caplog)
    assert len(lines) == 1 and "https://evil.example" in lines[0]


def test_host_refusal_logs_the_host(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    with server(serve_demo=True) as srv:
        async def ws_refusal() -> tuple[str | None, int | None, str]:
            sock = socket.create_connection(("127.0.0.1", srv.port))
            return await first_or_close(f"ws://rebind.example:{srv.port}/", sock=sock)

        assert run(ws_refusal())[:2] == (None, CLOSE_FORBIDDEN)
        status, _ = raw_http(srv.port, ["GET / HTTP/1.1", "Host: rebind2.example"])
        assert status == 403
    lines = warnings_of(caplog)
    assert len(lines) == 2
    assert "rebind.example" in lines[0] and "rebind2.example" in lines[1]


def test_bad_token_is_logged_without_the_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "tracker")
    with server(token="s3cret-expected") as srv:
        first, code, _ = run(first_or_close(srv.url + "?token=wr0ng-given"))
        assert (first, code) == (None, CLOSE_UNAUTHORIZED)
        first, code, _ = run(first_or_close(
            srv.url, additional_headers={"Authorization": "Bearer wr0ng-header"}))
        assert (first, code) == (None, CLOSE_UNAUTHORIZED)
    lines = warnings_of(caplog)
    assert len(lines) == 2 and all("token" in line for line in lines)
    text = "\n".join(r.getMessage() for r in caplog.records)
    for secret in ("s3cret-expected", "wr0ng-given", "wr0ng-header"):
        assert secret not in text


def test_refusal_warnings_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    with server() as srv:
        async def main() -> list[tuple[str | None, int | None, str]]:
            return [await first_or_close(srv.url, origin=f"https://evil{i}.example")
                    for i in range(40)]

        assert all(r[1] == CLOSE_FORBIDDEN for r in run(main()))
        assert srv.stats().refused == 40
    lines = warnings_of(caplog)
    assert 1 <= len(lines) <= 10, lines


# ---- 2. per-frame work off the pipeline's threads, once per frame ---------------------------

def test_sink_only_hands_the_frame_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """Poses, JSON and previews are made on the server's thread, never the pipeline's."""
    from tracker.serve import encoder

    threads: set[str] = set()
    real_pose, real_jpeg = encoder.estimate_pose, encoder.preview_jpeg

    def pose(*args: Any) -> Any:
        threads.add(threading.current_thread().name)
        return real_pose(*args)

    def jpeg(*args: Any) -> Any:
        threads.add(threading.current_thread().name)
        return real_jpeg(*args)

    monkeypatch.setattr(encoder, "estimate_pose", pose)
    monkeypatch.setattr(encoder, "preview_jpeg", jpeg)
    with server(preview=True, preview_fps=1000.0) as srv:
        async def main() -> list[Any]:
            async with connect(srv.url) as ws:
                await recv_json(ws)
                assert wait_until(lambda: srv.stats().clients == 1)
                StreamSink(srv).process(tracked_frame(0))
                return [await ws.recv(), await ws.recv()]

        text, packet = run(main())
    assert json.loads(text)["type"] == "frame" and isinstance(packet, bytes)
    assert threads and threading.current_thread().name not in threads


def test_each_frame_is_encoded_once_per_subscription(monkeypatch: pytest.MonkeyPatch) -> None:
    from tracker.serve import encoder

    calls: list[int] = []
    jpegs: list[int] = []
    real_frame, real_jpeg = encoder.protocol.frame_message, encoder.preview_jpeg

    def frame_message(index: int, *args: Any, **kwargs: Any) -> Any:
        calls.append(index)
        return real_frame(index, *args, **kwargs)

    def jpeg(tracked: Any, *args: Any) -> Any:
        jpegs.append(tracked.frame.index)
        return real_jpeg(tracked, *args)

    monkeypatch.setattr(encoder.protocol, "frame_message", frame_message)
    monkeypatch.setattr(encoder, "preview_jpeg", jpeg)
    n_clients, n_frames = 12, 6
    with server(preview=True, preview_fps=1000.0) as srv:
        async def main() -> list[list[Any]]:
            conns = await asyncio.gather(*(connect(srv.url) for _ in range(n_clients)))
            for ws in conns:
                await recv_json(ws)
            await conns[0].send('{"type": "subscribe", "fields": ["points"]}')
            assert (await recv_json(conns[0]))["type"] == "subscribed"
            got: list[list[Any]] = [[] for _ in conns]
            for i in range(n_frames):  # lockstep: every client gets every frame
                srv.publish(tracked_frame(i, faces=2))
                for k, ws in enumerate(conns):
                    got[k] += [await ws.recv(), await ws.recv()]
            await asyncio.gather(*(ws.close() for ws in conns))
            return got

        got = run(main())
    frames = [[json.loads(m) for m in g if isinstance(m, str)] for g in got]
    assert all([m["frame"] for m in f] == list(range(n_frames)) for f in frames)
    assert all(set(m["faces"][0]) == {"id", "points"} for m in frames[0])
    assert len(calls) <= 2 * n_frames  # two distinct subscriptions, not one per client
    assert sorted(set(calls)) == list(range(n_frames)) and len(jpegs) == n_frames


def test_frames_the_encoder_skips_count_as_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst faster than the encoder: it takes the newest frame; every client still gets the
    last one and ``received + sum(dropped) == bye.frames``."""
    import time

    from tracker.serve import encoder

    real_pose = encoder.estimate_pose

    def slow_pose(*args: Any) -> Any:
        time.sleep(0.003)
        return real_pose(*args)

    monkeypatch.setattr(encoder, "estimate_pose", slow_pose)
    n = 100
    with server() as srv:
        async def main() -> list[list[dict[str, Any]]]:
            conns = [await connect(srv.url) for _ in range(3)]
            for ws in conns:
                await recv_json(ws)
            await conns[1].send('{"type": "subscribe", "fields": ["pose"]}')
            await recv_json(conns[1])
            assert wait_until(lambda: srv.stats().clients == 3)

            def burst() -> None:
                for i in range(n):
                    srv.publish(tracked_frame(i))
                srv.close()

            threading.Thread(target=burst).start()

            async def rest(ws: ClientConnection) -> list[dict[str, Any]]:
                out = []
                try:
                    async for m in ws:
                        out.append(json.loads(m))
                except ConnectionClosed:
                    pass
                return out

            return await asyncio.gather(*(rest(ws) for ws in conns))

        results = run(main())
        encoded = srv._encoder.encoded
    assert encoded < n  # the encoder did skip frames
    for messages in results:
        frames = [m for m in messages if m["type"] == "frame"]
        assert messages[-1] == {"type": "bye", "reason": "end of stream", "frames": n}
        assert frames[-1]["frame"] == n - 1
        assert len(frames) + sum(m["dropped"] for m in frames) == n


def test_refusal_log_tells_how_many_it_left_out(monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    from tracker.serve import handshake

    now = [100.0]
    monkeypatch.setattr(handshake.time, "monotonic", lambda: now[0])
    caplog.set_level(logging.WARNING, LOGGER)
    refusals = handshake.RefusalLog(burst=2, period_s=10.0)
    for _ in range(5):
        refusals.warn("10.0.0.1", "origin 'https://evil.example' not allowed")
    now[0] += 10.0
    refusals.warn("10.0.0.2", "wrong token")
    refusals.warn("10.0.0.2", "wrong token")
    refusals.warn("10.0.0.2", "wrong token")
    refusals.flush()
    lines = warnings_of(caplog)
    assert len(lines) == 5
    assert "further refusals" in lines[1] and "3 earlier refusals not logged" in lines[2]
    assert lines[4] == "refused 1 more clients (not logged one by one)"


@pytest.mark.parametrize("origin", ["http://[", "https://[zz]:1"])
def test_malformed_origin_is_refused_not_an_error(origin: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    with server() as srv:
        assert run(first_or_close(srv.url, origin=origin))[:2] == (None, CLOSE_FORBIDDEN)
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)
