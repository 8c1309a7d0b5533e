"""Websocket load: many clients, one stalled, must not slow the pipeline; latency and memory.

Two phases, both with N websocket clients (default 50) on 127.0.0.1 in a separate process, one
of them stalled (it never reads; when the server drops it, it comes back stalled again):

1. throughput: the pipeline runs unpaced over ``--frames`` frames, alternately without clients
   and with them, ``--repeats`` times each; prints fps of both (mean and spread).
2. soak: the source is paced at its frame rate (like a camera) for ``--duration`` seconds with
   the clients; prints frame-to-client latency p50/p99 (``now - wall_time`` at each client),
   frames and drops per client, stall disconnects, and the server process's RSS over time.

The track stage is the real one (``--track model``: detector + landmark engine) or a stand-in
(``--track synthetic``, default) that sleeps ``--track-ms`` like a model call that releases the
GIL, then builds one synthetic face with a head pose to solve.

    python benchmarks/ws_load.py                       # 50 clients, 5 minute soak
    python benchmarks/ws_load.py --duration 30 --repeats 2 --clients 10
    python benchmarks/ws_load.py --track model --source ../shared/data/videos/short_hamilton_clip.mp4
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tracker.io.source import open_source
from tracker.runtime.pipeline import FunctionStage, Pipeline, Stage
from tracker.serve.protocol import SourceMeta
from tracker.serve.server import StreamOptions, StreamServer, StreamSink
from tracker.types import Frame, TrackedFrame  # noqa: E402

# ---- server side --------------------------------------------------------------------------------

class LoopingSource(Stage):
    """Frames of ``spec`` (reopened when it ends), optionally paced at ``fps`` in wall time."""

    name = "decode"

    def __init__(self, spec: str, frames: int, fps: float | None) -> None:
        self.spec, self.frames, self.fps = spec, frames, fps

    def items(self) -> Iterator[Frame]:
        index, start = 0, time.monotonic()
        while index < self.frames:
            src = open_source(self.spec)
            try:
                for f in src.frames():
                    if index >= self.frames:
                        return
                    if self.fps:
                        delay = start + index / self.fps - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                    yield Frame(index, index / (self.fps or 30.0), f.image, time.time())
                    index += 1
            finally:
                src.close()


def synthetic_track(track_ms: float) -> Stage:
    import cv2

    from tracker.outputs.headpose import FACE_MODEL_68, project, rotation_from_angles
    from tracker.types import Box, Landmarks

    def track(frame: Frame) -> TrackedFrame:
        time.sleep(track_ms / 1e3)  # a model call that releases the GIL
        h, w = frame.image.shape[:2]
        r = cv2.Rodrigues(rotation_from_angles(20 * np.sin(frame.index / 20), 5.0, 0.0))[0]
        pts = project(FACE_MODEL_68, r, np.array([0.0, 0.0, 700.0]), w, h).astype(np.float32)
        box = Box(*pts.min(0).tolist(), *pts.max(0).tolist())
        face = Landmarks(frame.index, frame.time, 0, pts, np.full(68, 0.9, np.float32), 0.95, box)
        return TrackedFrame(frame, (face,))

    return FunctionStage("track", track)


def model_track() -> Stage:
    from tracker.api import assembly
    from tracker.config.schema import Config

    cfg = Config()
    return assembly.track_stage(cfg, assembly.load_detector(cfg), assembly.load_landmarker(cfg),
                                assembly.load_denoiser(cfg))


def run_pipeline(args: argparse.Namespace, frames: int, fps: float | None,
                 srv: StreamServer | None) -> tuple[float, int]:
    """(fps, frames dropped in channels) of one pipeline run."""
    track = model_track() if args.track == "model" else synthetic_track(args.track_ms)
    policy = "drop_oldest" if fps else "block"
    p = Pipeline()
    a = p.channel("frames", 8, policy)
    p.add(LoopingSource(args.source, frames, fps), outputs=[a])
    outs = []
    if srv is not None:
        b = p.channel("ws", 32, policy)
        outs.append(b)
    p.add(track, input=a, outputs=outs)
    if srv is not None:
        p.add(StreamSink(srv), input=b)
    m = p.run()
    return m.stage("track").count / m.seconds, m.dropped


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ---- client side (separate process) -----------------------------------------------------------

async def fast_client(url: str, lat: list[float], counts: list[int], stop: asyncio.Event) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    received = dropped = 0
    try:
        async with connect(url, max_size=2**24, close_timeout=2) as ws:
            async for raw in ws:
                if isinstance(raw, bytes):
                    continue
                msg = json.loads(raw)
                if msg["type"] == "frame":
                    lat.append(time.time() - msg["wall_time"])
                    received += 1
                    dropped += msg["dropped"]
                if stop.is_set():
                    break
    except (ConnectionClosed, OSError):
        pass
    counts.extend([received, dropped])


async def stalled_client(port: int, hold_s: float, stop: asyncio.Event) -> int:
    """Handshakes, never reads, lets go after ``hold_s`` and comes back; returns connections."""
    loop = asyncio.get_running_loop()
    n = 0
    while not stop.is_set():
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        await loop.sock_sendall(sock, (
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        n += 1
        try:
            await asyncio.wait_for(stop.wait(), hold_s)
        except asyncio.TimeoutError:
            pass
        sock.close()
    return n


def clients_main(port: int, n_clients: int, n_stalled: int, hold_s: float, conn: Any) -> None:
    async def main() -> dict[str, Any]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_stop() -> None:  # the parent says stop
            loop.remove_reader(conn.fileno())
            stop.set()

        loop.add_reader(conn.fileno(), on_stop)
        url = f"ws://127.0.0.1:{port}/"
        lat: list[float] = []
        counts: list[list[int]] = [[] for _ in range(n_clients - n_stalled)]
        tasks = [asyncio.create_task(fast_client(url, lat, c, stop)) for c in counts]
        stalled = [asyncio.create_task(stalled_client(port, hold_s, stop))
                   for _ in range(n_stalled)]
        conn.send("ready")
        await asyncio.gather(*tasks)
        stop.set()
        reconnects = sum(await asyncio.gather(*stalled))
        return {"latency": lat, "counts": counts, "stalled_connections": reconnects}

    conn.send(asyncio.run(main()))


class Clients:
    """N clients in a child process (so they use neither the server's GIL nor its memory)."""

    def __init__(self, port: int, n: int, stalled: int, hold_s: float) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=clients_main, args=(port, n, stalled, hold_s, child),
                                daemon=True)
        self.proc.start()
        if self.conn.recv() != "ready":
            raise RuntimeError("clients failed to start")

    def finish(self) -> dict[str, Any]:
        """Called after the server said bye: the fast clients end by themselves."""
        self.conn.send("stop")
        result = self.conn.recv()
        self.proc.join(10)
        return result


# ---- phases -----------------------------------------------------------------------------------

def serve(args: argparse.Namespace, meta: SourceMeta) -> StreamServer:
    srv = StreamServer(StreamOptions(port=0, max_clients=args.clients + 8), meta)
    srv.start()
    return srv


def wait_clients(srv: StreamServer, n: int) -> None:
    deadline = time.monotonic() + 60
    while srv.stats().clients < n and time.monotonic() < deadline:
        time.sleep(0.05)


def throughput(args: argparse.Namespace, meta: SourceMeta) -> dict[str, Any]:
    without, with_ = [], []
    for r in range(args.repeats):
        fps, _ = run_pipeline(args, args.frames, None, None)
        without.append(fps)
        srv = serve(args, meta)
        clients = Clients(srv.port, args.clients, args.stalled, args.hold_s)
        wait_clients(srv, args.clients)
        fps, _ = run_pipeline(args, args.frames, None, srv)
        result = clients.finish()
        with_.append(fps)
        got = [c[0] for c in result["counts"]]
        print(f"  run {r + 1}: {without[-1]:7.1f} fps without clients, {fps:7.1f} fps with "
              f"{args.clients} (fast clients got {min(got)}-{max(got)} of {args.frames} frames)",
              flush=True)
    return {"fps_without": without, "fps_with": with_}


def soak(args: argparse.Namespace, meta: SourceMeta) -> dict[str, Any]:
    srv = serve(args, meta)
    clients = Clients(srv.port, args.clients, args.stalled, args.hold_s)
    wait_clients(srv, args.clients)
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:
        t0 = time.monotonic()
        while not done.wait(args.sample_s):
            samples.append((time.monotonic() - t0, rss_mb()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    frames = int(round(args.duration * meta.fps))
    rss0 = rss_mb()
    fps, dropped = run_pipeline(args, frames, meta.fps, srv)
    done.set()
    stats = srv.stats()
    result = clients.finish()
    lat_ms = np.asarray(result["latency"]) * 1e3
    got = [c[0] for c in result["counts"]]
    missed = [c[1] for c in result["counts"]]
    return {
        "frames": frames, "pipeline_fps": fps, "pipeline_dropped": dropped,
        "latency_ms": {"p50": float(np.percentile(lat_ms, 50)),
                       "p99": float(np.percentile(lat_ms, 99)), "max": float(lat_ms.max())},
        "frames_per_fast_client": {"min": min(got), "mean": statistics.mean(got)},
        "dropped_per_fast_client": {"max": max(missed), "mean": statistics.mean(missed)},
        "stall_disconnects": stats.stalled,
        "stalled_connections": result["stalled_connections"],
        "rss_mb_start": rss0,
        "rss_mb": samples,
    }


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    clip = here.parent / "shared" / "data" / "videos" / "short_hamilton_clip.mp4"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default=str(clip) if clip.exists()
                   else "lavfi:testsrc2=size=640x360:rate=30")
    p.add_argument("--track", choices=("synthetic", "model"), default="synthetic")
    p.add_argument("--track-ms", type=float, default=20.0)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--stalled", type=int, default=1)
    p.add_argument("--frames", type=int, default=600, help="frames per throughput run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--duration", type=float, default=300.0, help="soak seconds")
    p.add_argument("--hold-s", type=float, default=20.0,
                   help="seconds a stalled client holds its connection before coming back")
    p.add_argument("--sample-s", type=float, default=10.0, help="RSS sampling period")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()

    probe = open_source(args.source)
    info = probe.info
    probe.close()
    meta = SourceMeta(info.width, info.height, info.fps or 30.0)
    print(f"source {args.source} ({info.width}x{info.height} @ {meta.fps:.2f} fps), track "
          f"{args.track}{f' ({args.track_ms:g} ms)' if args.track == 'synthetic' else ''}, "
          f"{args.clients} clients ({args.stalled} stalled), {os.cpu_count()} CPUs", flush=True)
    out: dict[str, Any] = {"args": vars(args)}
    if args.repeats:
        print(f"throughput ({args.frames} frames, unpaced):", flush=True)
        t = out["throughput"] = throughput(args, meta)
        for key, label in (("fps_without", "no clients"), ("fps_with", f"{args.clients} clients")):
            v = t[key]
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            print(f"  {label:>11}: {statistics.mean(v):7.1f} fps  (sd {sd:.1f}, runs "
                  f"{', '.join(f'{x:.1f}' for x in v)})")
    if args.duration > 0:
        print(f"soak ({args.duration:g} s paced at {meta.fps:.2f} fps):", flush=True)
        s = out["soak"] = soak(args, meta)
        lat = s["latency_ms"]
        print(f"  pipeline {s['pipeline_fps']:.2f} fps, {s['pipeline_dropped']} dropped in queues")
        print(f"  latency frame->client: p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, "
              f"max {lat['max']:.1f} ms")
        print(f"  per fast client: >= {s['frames_per_fast_client']['min']} of {s['frames']} "
              f"frames, dropped mean {s['dropped_per_fast_client']['mean']:.1f} "
              f"max {s['dropped_per_fast_client']['max']}")
        print(f"  stalled client: {s['stalled_connections']} connections, "
              f"{s['stall_disconnects']} stall disconnects")
        rss = s["rss_mb"]
        if rss:
            print("  server RSS MB: start " f"{s['rss_mb_start']:.1f}, " + ", ".join(
                f"{t:.0f}s {m:.1f}" for t, m in rss[:: max(1, len(rss) // 10)]) +
                f", end {rss[-1][1]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
