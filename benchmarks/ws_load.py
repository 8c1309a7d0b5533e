"""Websocket load: many clients, one stalled, must not slow the pipeline; latency and memory.

Two phases, both with N websocket clients (default 50) on 127.0.0.1 in a separate process, one
of them stalled (it never reads; when the server drops it, it comes back stalled again):

1. throughput: the pipeline (source -> track -> websocket sink, same graph each time) runs
   unpaced over ``--frames`` frames, alternately with 0 clients and with N, ``--repeats`` times
   each (ABBA order against drift); prints fps of both (mean and spread), their ratio, and the
   CPU time per frame of the sink's ``process`` (on the pipeline's thread) and of the server's
   own threads (event loop, encoder).
2. soak: the source is paced at its frame rate (like a camera) for ``--duration`` seconds with
   the clients; prints frame-to-client latency p50/p99 (``now - wall_time`` at each client),
   frames and drops per client, stall disconnects, and the server process's RSS over time.

The CPU model (``lscpu``) is printed with the numbers. The clients share the machine's CPUs
with the pipeline: their own CPU share is printed too, and ``--raw-clients`` replaces them (in
the throughput phase) by readers that parse nothing, to see the server's cost alone.

The track stage is the real one (``--track model``: detector + landmark engine) or a stand-in
(``--track synthetic``, default) that sleeps ``--track-ms`` like a model call that releases the
GIL, then builds one synthetic face with a head pose to solve. ``--preview`` adds JPEG previews.

    python benchmarks/ws_load.py                       # 50 clients, 5 minute soak
    python benchmarks/ws_load.py --duration 30 --repeats 2 --clients 10
    python benchmarks/ws_load.py --repeats 4 --duration 0 --track model --raw-clients
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


class TimedSink(StreamSink):
    """The websocket sink, counting the CPU time its ``process`` takes on the pipeline thread
    and the CPU time of the server's threads from its first item to its close."""

    def __init__(self, server: StreamServer) -> None:
        super().__init__(server)
        self.cpu_s = 0.0
        self.server_cpu_s = 0.0
        self.close_s = 0.0  # how long ending the stream took (bye, closing handshakes)
        self._server_start: float | None = None

    def process(self, item: TrackedFrame) -> None:
        if self._server_start is None:
            self._server_start = thread_cpu_s("tracker-ws")
        t = time.thread_time()
        super().process(item)
        self.cpu_s += time.thread_time() - t

    def close(self) -> None:
        if self._server_start is not None:
            self.server_cpu_s = thread_cpu_s("tracker-ws") - self._server_start
        t = time.perf_counter()
        super().close()
        self.close_s = time.perf_counter() - t


def thread_cpu_s(prefix: str) -> float:
    """CPU seconds used so far by this process's live threads named ``prefix``..."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for t in threading.enumerate():
        if t.name.startswith(prefix) and t.native_id is not None:
            try:
                fields = Path(f"/proc/self/task/{t.native_id}/stat").read_text().rsplit(")", 1)
            except OSError:
                continue
            utime, stime = fields[1].split()[11:13]
            total += (int(utime) + int(stime)) / tick
    return total


def cpu_model() -> str:
    """The CPU's model name, with the number of CPUs this process may use."""
    from tracker.engines.tuning import cpu_signature

    return f"{cpu_signature()['cpu']}, {len(os.sched_getaffinity(0))} CPUs"


def run_pipeline(args: argparse.Namespace, frames: int, fps: float | None,
                 srv: StreamServer | None, cpu: dict[str, float] | None = None,
                 ) -> tuple[float, int]:
    """(fps, frames dropped in channels) of one pipeline run; ``cpu`` gets the CPU seconds of
    the sink's ``process`` and of the server's threads added."""
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
    sink = TimedSink(srv) if srv is not None else None
    if sink is not None:
        p.add(sink, input=b)
    m = p.run()
    if cpu is not None and sink is not None:
        cpu["sink"] = cpu.get("sink", 0.0) + sink.cpu_s
        cpu["server"] = cpu.get("server", 0.0) + sink.server_cpu_s
        cpu["close_s"] = cpu.get("close_s", 0.0) + sink.close_s
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


def handshake(port: int) -> bytes:
    """A websocket upgrade request for ws://127.0.0.1:PORT/."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()


async def raw_client(port: int, counts: list[int]) -> None:
    """A cheap stand-in for a client on another machine: handshakes, then reads and discards
    bytes (counting frame messages, parsing nothing) until the server's bye, and answers its
    close. Measures what the server costs without the clients' own CPU."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, handshake(port))
    buf = bytearray(1 << 20)
    frames = 0
    try:
        while n := await loop.sock_recv_into(sock, buf):
            frames += buf.count(b'{"type":"frame"', 0, n)
            if buf.find(b'{"type":"bye"', 0, n) >= 0:
                await loop.sock_sendall(sock, b"\x88\x82\0\0\0\0\x03\xe8")  # close 1000
                while await loop.sock_recv_into(sock, buf):
                    pass
                break
    except OSError:
        pass
    finally:
        sock.close()
    counts.extend([frames, 0])


async def stalled_client(port: int, hold_s: float, stop: asyncio.Event) -> int:
    """Handshakes, never reads, lets go after ``hold_s`` and comes back; returns connections."""
    loop = asyncio.get_running_loop()
    n = 0
    while not stop.is_set():
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, handshake(port))
        n += 1
        try:
            await asyncio.wait_for(stop.wait(), hold_s)
        except asyncio.TimeoutError:
            pass
        sock.close()
    return n


def clients_main(port: int, n_clients: int, n_stalled: int, hold_s: float, nice: int,
                 raw: bool, conn: Any) -> None:
    if nice:
        os.nice(nice)

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
        tasks = [asyncio.create_task(raw_client(port, c) if raw else
                                     fast_client(url, lat, c, stop)) for c in counts]
        stalled = [asyncio.create_task(stalled_client(port, hold_s, stop))
                   for _ in range(n_stalled)]
        conn.send("ready")
        cpu0 = time.process_time()
        await asyncio.gather(*tasks)
        cpu_s = time.process_time() - cpu0
        stop.set()
        reconnects = sum(await asyncio.gather(*stalled))
        return {"latency": lat, "counts": counts, "stalled_connections": reconnects,
                "cpu_s": cpu_s}

    conn.send(asyncio.run(main()))


class Clients:
    """N clients in a child process (so they use neither the server's GIL nor its memory)."""

    def __init__(self, port: int, n: int, stalled: int, hold_s: float, nice: int = 0,
                 raw: bool = False) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=clients_main,
                                args=(port, n, stalled, hold_s, nice, raw, child), daemon=True)
        self.proc.start()
        if self.conn.recv() != "ready":
            raise RuntimeError("clients failed to start")

    def finish(self) -> dict[str, Any]:
        """Called after the server said bye: the fast clients end by themselves (and the
        child may already have sent its result and gone)."""
        try:
            self.conn.send("stop")
        except (BrokenPipeError, ConnectionResetError):
            pass
        result = self.conn.recv()
        self.proc.join(10)
        return result


# ---- phases -----------------------------------------------------------------------------------

def serve(args: argparse.Namespace, meta: SourceMeta) -> StreamServer:
    srv = StreamServer(StreamOptions(port=0, max_clients=args.clients + 8, preview=args.preview,
                                     preview_fps=args.preview_fps), meta)
    srv.start()
    return srv


def one_run(args: argparse.Namespace, meta: SourceMeta, n_clients: int,
            cpu: dict[str, float]) -> tuple[float, str]:
    """fps of one unpaced run with ``n_clients`` connected, and a note on what they got."""
    srv = serve(args, meta)
    try:
        if not n_clients:
            return run_pipeline(args, args.frames, None, srv, cpu)[0], ""
        clients = Clients(srv.port, n_clients, args.stalled, args.hold_s, args.client_nice,
                          args.raw_clients)
        wait_clients(srv, n_clients)
        t0 = time.monotonic()
        fps, _ = run_pipeline(args, args.frames, None, srv, cpu)
        seconds = time.monotonic() - t0
    finally:
        srv.close()
    result = clients.finish()
    got = [c[0] for c in result["counts"]]
    return fps, (f"fast clients got {min(got)}-{max(got)} of {args.frames} frames, using "
                 f"{result['cpu_s'] / seconds:.0%} of a CPU")


def wait_clients(srv: StreamServer, n: int) -> None:
    deadline = time.monotonic() + 60
    while srv.stats().clients < n and time.monotonic() < deadline:
        time.sleep(0.05)


def throughput(args: argparse.Namespace, meta: SourceMeta) -> dict[str, Any]:
    without: list[float] = []
    with_: list[float] = []
    cpu: dict[int, dict[str, float]] = {0: {}, args.clients: {}}
    for r in range(args.repeats):
        order = (0, args.clients) if r % 2 == 0 else (args.clients, 0)
        notes = {}
        for n in order:
            fps, notes[n] = one_run(args, meta, n, cpu[n])
            (with_ if n else without).append(fps)
        print(f"  run {r + 1}: {without[-1]:7.1f} fps with 0 clients, {with_[-1]:7.1f} fps with "
              f"{args.clients} ({notes[args.clients]})", flush=True)
    frames = args.frames * args.repeats
    per_frame = {n: {k: v / frames * 1e3 for k, v in c.items()} for n, c in cpu.items()}
    return {"fps_without": without, "fps_with": with_, "cpu_ms_per_frame": per_frame}


def soak(args: argparse.Namespace, meta: SourceMeta) -> dict[str, Any]:
    srv = serve(args, meta)
    clients = Clients(srv.port, args.clients, args.stalled, args.hold_s, args.client_nice)
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
    p.add_argument("--preview", action="store_true", help="serve JPEG previews too")
    p.add_argument("--preview-fps", type=float, default=10.0)
    p.add_argument("--raw-clients", action="store_true",
                   help="throughput with cheap readers that parse nothing (the server's cost "
                        "without the clients' own CPU, as if they ran on other machines)")
    p.add_argument("--client-nice", type=int, default=0,
                   help="niceness of the clients' process (e.g. 19: they only get CPU the "
                        "pipeline leaves; for measuring the server's cost alone)")
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
          f"{args.clients} {'raw ' if args.raw_clients else ''}clients ({args.stalled} stalled, "
          f"nice {args.client_nice})", flush=True)
    print(f"CPU: {cpu_model()}", flush=True)
    out: dict[str, Any] = {"args": vars(args)}
    if args.repeats:
        print(f"throughput ({args.frames} frames, unpaced):", flush=True)
        t = out["throughput"] = throughput(args, meta)
        for key, label in (("fps_without", "0 clients"), ("fps_with", f"{args.clients} clients")):
            v = t[key]
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            print(f"  {label:>11}: {statistics.mean(v):7.1f} fps  (sd {sd:.1f}, runs "
                  f"{', '.join(f'{x:.1f}' for x in v)})")
        ratio = statistics.mean(t["fps_with"]) / statistics.mean(t["fps_without"])
        print(f"  with {args.clients} clients: {ratio:.1%} of the fps with 0 "
              f"({(ratio - 1) * 100:+.1f} %)")
        for n, c in t["cpu_ms_per_frame"].items():
            print(f"  CPU per frame, {n} clients: sink process {c.get('sink', 0):.3f} ms on the "
                  f"pipeline thread, server threads {c.get('server', 0):.3f} ms")
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
