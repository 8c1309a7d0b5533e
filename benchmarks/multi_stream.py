"""How many live 30 fps streams one process tracks: batched model vs one model per stream.

    python benchmarks/multi_stream.py [--streams 1,2,3,4,6,8] [--seconds 15] [--phase both]
                                      [--repeat 1] [--json OUT]

Every stream is the hamilton clip looped (``lavfi:movie=CLIP:loop=0``) and handed out as a
live camera would: frame k at t0 + k/30 s, stamped with that time (see :func:`paced`), through
the real pipeline (detector, landmark model on ``--engine``, temporal model, One Euro
smoothing, a JSONL file per stream) with live queues (``drop_oldest``). Each point runs in a
fresh process, the two modes in turns at each N so that load from other processes falls on
both alike:

* ``batched``: one landmark model; the faces of all streams go into one call
  (``[pipeline] batch_streams = true``, the default);
* ``separate``: one landmark model per stream, each called alone (``batch_streams = false``).

Phases: ``in``: every stream shows the same frame of the clip at the same moment (the best case
for batching, and the worst for load: every stream reaches the clip's profile shots, where the
face detector runs on almost every frame, at once); ``staggered``: stream i starts i/N of the
way into the clip and its frames arrive i/N of a frame interval later (cameras that are not
synchronised, showing different scenes). A point *holds* when every stream delivers >= 29 fps,
drops <= 0.5 % of its frames, its frame queue never fills, and its p99 latency from a frame's
arrival to the sinks is under 100 ms (over the whole run; the first frame is due one second
after the run starts). The script prints the CPU (``lscpu``) and the load average before and
after, the CPU the process used (cores busy = CPU seconds / wall seconds) and the cores other
processes kept busy meanwhile (``/proc/stat``: the machine's busy time less this process's).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "data" / "videos" / "short_hamilton_clip.mp4"
FPS = 30
CLIP_FRAMES = 275  # the hamilton clip


def cpu_model() -> str:
    """The CPU's model name (:func:`tracker.engines.tuning.cpu_signature`)."""
    from tracker.engines.tuning import cpu_signature

    return str(cpu_signature()["cpu"])


def clip_spec(clip: Path, start_s: float = 0.0) -> str:
    """The clip from ``start_s`` on, looped forever, as fast as it is read (the pacing is
    :func:`paced`'s)."""
    return f"lavfi:movie={clip}:loop=0:seek_point={start_s:.3f},setpts=N/({FPS}*TB)"


def paced(video: Any, t0: float) -> Any:
    """``video`` handing out frame k at wall time ``t0 + k / FPS`` (decoded just before),
    stamped with that time: a camera's frame arrives then, whether or not the pipeline is
    ready (a decoder that falls behind shows as lost fps and as latency)."""
    frames = video.frames

    def gen() -> Any:
        for k, frame in enumerate(frames()):
            due = t0 + k / FPS
            wait = due - time.time()
            if wait > 0:
                time.sleep(wait)
            yield replace(frame, wall_time=due)

    video.frames = gen
    return video


def cpu_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (``/proc/stat``)."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return (sum(fields[:8]) - idle) / hz, sum(fields[:8]) / hz


def one_point(n: int, mode: str, phase: str, seconds: float, engine: str, clip: Path
              ) -> dict[str, Any]:
    """Run ``n`` streams in this process; the per-stream figures as a dict."""
    sys.path.insert(0, str(ROOT))
    from tracker.api import Tracker, TrackerOptions, assembly, run_many
    from tracker.config.schema import load_config

    cfg = load_config(None).with_overrides({
        "pipeline.policy": "drop_oldest", "run.max_frames": int(seconds * FPS),
        "pipeline.batch_streams": mode == "batched", "model.engine": engine})
    real_open, lock, opened = assembly.open_video, threading.Lock(), [0]
    start = [0.0]

    def open_video(c: Any) -> Any:
        with lock:
            i, opened[0] = opened[0], opened[0] + 1
        offset = i / n / FPS if phase == "staggered" else 0.0
        return paced(real_open(c), start[0] + offset)

    assembly.open_video = open_video  # type: ignore[assignment]
    tracker = Tracker(TrackerOptions(cfg))
    with tempfile.TemporaryDirectory() as tmp:
        tracker.landmarker  # noqa: B018 - load the models before the clock starts
        before = resource.getrusage(resource.RUSAGE_SELF)
        busy0, _ = cpu_busy()
        t0 = time.perf_counter()
        start[0] = time.time() + 1.0  # every stream is open by then
        length = CLIP_FRAMES / FPS
        starts = [i * length / n if phase == "staggered" else 0.0 for i in range(n)]
        report = run_many(tracker, [clip_spec(clip, t) for t in starts],
                          [f"{tmp}/{{stream}}.jsonl"])
        wall = time.perf_counter() - t0
        busy1, _ = cpu_busy()
        span = time.time() - start[0]  # from the first frame's arrival to the end
        after = resource.getrusage(resource.RUSAGE_SELF)
    tracker.close()
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    others = max(0.0, (busy1 - busy0 - cpu) / wall)  # cores other processes kept busy
    streams = []
    for s in report.streams:
        if s.report is None:
            streams.append({"name": s.name, "error": str(s.error)})
            continue
        m = s.report.metrics
        frames_q = next(c for c in m.channels if c.name == "frames")
        streams.append({
            "name": s.name, "error": str(s.error) if s.error else None, "decoded": m.frames,
            "tracked": s.report.stats.frames, "dropped": s.dropped, "seconds": m.seconds,
            "fps": s.report.stats.frames / span,
            "p50_ms": s.latency_p50_ms, "p99_ms": s.latency_p99_ms,
            "queue_max": frames_q.max_depth, "queue_cap": frames_q.capacity})
    b = report.batching
    return {"n": n, "mode": mode, "phase": phase, "wall_s": wall, "cpu_s": cpu,
            "other_cores": others,
            "streams": streams,
            "batching": None if b is None else {"calls": b.calls,
                                                "streams_per_call": b.streams_per_call,
                                                "faces_per_call": b.faces_per_call,
                                                "wait_p99_ms": b.wait_p99_ms}}


def holds(point: dict[str, Any]) -> bool:
    """Every stream at >= 29 fps, <= 0.5 % dropped, queue never full, p99 < 100 ms."""
    ss = point["streams"]
    return all(s.get("error") is None and "fps" in s and s["fps"] >= FPS - 1
               and s["dropped"] <= 0.005 * max(1, s["decoded"])
               and s["queue_max"] < s["queue_cap"] and s["p99_ms"] < 100 for s in ss)


def run_point(n: int, mode: str, phase: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--one", str(n), "--mode", mode, "--phase", phase,
           "--seconds", str(args.seconds), "--engine", args.engine, "--clip", str(args.clip)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds * 4 + 120)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def row(p: dict[str, Any]) -> str:
    ss = [s for s in p["streams"] if "fps" in s]
    worst_fps = min((s["fps"] for s in ss), default=0.0)
    drops = sum(s["dropped"] for s in ss)
    decoded = sum(s["decoded"] for s in ss)
    p50 = max((s["p50_ms"] for s in ss), default=0.0)
    p99 = max((s["p99_ms"] for s in ss), default=0.0)
    q = max((s["queue_max"] for s in ss), default=0)
    b = p["batching"]
    batch = f"{b['streams_per_call']:.2f}" if b else "-"
    return (f"| {p['phase']} | {p['n']} | {p['mode']} | {worst_fps:.1f} | {drops}/{decoded} | "
            f"{p50:.1f} | {p99:.1f} | {q}/{ss[0]['queue_cap'] if ss else '-'} | {batch} | "
            f"{p['cpu_s'] / p['wall_s']:.2f} | {p['other_cores']:.2f} | "
            f"{'yes' if holds(p) else 'no'} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", default="1,2,3,4,6,8", help="stream counts to try, ascending")
    ap.add_argument("--seconds", type=float, default=15.0, help="length of each point")
    ap.add_argument("--phase", choices=("in", "staggered", "both"), default="both")
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--clip", type=Path, default=CLIP)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each point (all must hold)")
    ap.add_argument("--json", type=Path, help="also write every point here")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=("batched", "separate"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        phase = "in" if args.phase == "both" else args.phase
        print(json.dumps(one_point(args.one, args.mode, phase, args.seconds, args.engine,
                                   args.clip)))
        return
    counts = [int(x) for x in args.streams.split(",")]
    phases = ("in", "staggered") if args.phase == "both" else (args.phase,)
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; load average before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    print(f"each point: {args.seconds:g} s of 30 fps live streams of {args.clip.name}, "
          f"engine {args.engine}", flush=True)
    print("| phase | streams | mode | worst fps | dropped | p50 ms (worst) | p99 ms (worst) | "
          "queue max | streams a call | cores busy | other processes' cores | holds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    points, best = [], {}
    for phase in phases:
        failed: set[str] = set()
        for n in counts:
            modes = [m for m in ("batched", "separate") if m not in failed]
            ok = dict.fromkeys(modes, True)
            for _ in range(args.repeat):  # the modes in turns, so load falls on both alike
                for mode in modes:
                    p = run_point(n, mode, phase, args)
                    points.append(p)
                    print(row(p), flush=True)
                    ok[mode] = ok[mode] and holds(p)
            for mode, held in ok.items():
                if held:
                    best[(phase, mode)] = n
                else:
                    failed.add(mode)
            if len(failed) == 2:
                break
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for (phase, mode), n in sorted(best.items()):
        print(f"largest N that holds (every run of it), phase {phase}, {mode}: {n}")
    if args.json:
        args.json.write_text(json.dumps(points, indent=1) + "\n")


if __name__ == "__main__":
    main()
