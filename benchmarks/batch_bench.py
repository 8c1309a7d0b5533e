"""Throughput of ``tracker batch``: video seconds processed per wall second, 1 vs N local
workers and on a Ray cluster started on this machine.

    python benchmarks/batch_bench.py [--videos 8] [--workers N] [--out] [--no-ray]

Inputs are ``--videos`` copies of the hamilton clip (275 frames, 9.2 s each). Every mode runs
the real command (``python -m tracker batch ... --force``) in a fresh out-dir, timed from the
outside, so process start, model loading and (for Ray) connecting to the cluster count. The Ray
cluster (``ray start --head --num-cpus N``) is started before its timing and stopped after.
CPU seconds (user + system of the command and its pool) are shown for the local modes; Ray's
workers are not this script's children.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "data" / "videos" / "short_hamilton_clip.mp4"


def cpu_model() -> str:
    """The CPU's model name (:func:`tracker.engines.tuning.cpu_signature`)."""
    from tracker.engines.tuning import cpu_signature

    return str(cpu_signature()["cpu"])


def run_batch(inputs: Path, out: Path, extra: list[str]) -> dict[str, float]:
    """One timed ``tracker batch``; video seconds from its manifest."""
    cmd = [sys.executable, "-m", "tracker", "batch", str(inputs), "--out-dir", str(out),
           "--force", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the pool's processes included
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    video = sum(r["video_seconds"] for r in rows if r["status"] == "done")
    workers = len({r["worker"] for r in rows})
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "video_s": round(video, 2),
            "speed": round(video / wall, 3), "worker_processes": workers}


def start_ray(cpus: int, temp: str) -> tuple[subprocess.Popen[bytes], str]:
    """A head node on 127.0.0.1 with ``cpus`` CPUs, and its address (once it accepts drivers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray = Path(sys.executable).with_name("ray")
    os.environ["RAY_AUTH_MODE"] = "token"  # for the head and every driver started after it
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    head = subprocess.Popen(
        [str(ray), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         f"--num-cpus={cpus}", "--include-dashboard=false", "--disable-usage-stats",
         "--object-store-memory=100000000", f"--temp-dir={temp}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"127.0.0.1:{port}"
    check = [sys.executable, "-c", "import ray, sys; ray.init(address=sys.argv[1], "
             "logging_level='ERROR'); ray.shutdown()", address]
    for _ in range(60):
        if subprocess.run(check, capture_output=True).returncode == 0:
            return head, address
        time.sleep(1)
    stop_ray(head)
    raise SystemExit("the Ray head did not start")


def stop_ray(head: subprocess.Popen[bytes]) -> None:
    """Stop the cluster started by :func:`start_ray` (only its processes)."""
    head.send_signal(signal.SIGTERM)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=8, help="copies of the hamilton clip")
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                   help="N for the N-worker and Ray runs (default: the cores)")
    p.add_argument("--out", action="store_true", help="also write annotated videos")
    p.add_argument("--no-ray", action="store_true", help="skip the Ray run")
    args = p.parse_args()
    n = args.workers
    extra = ["--jsonl"] + (["--out"] if args.out else [])
    work = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    try:
        inputs = work / "in"
        inputs.mkdir()
        for i in range(args.videos):
            shutil.copy(CLIP, inputs / f"clip{i:03d}.mp4")
        results = {"1 worker": run_batch(inputs, work / "w1", extra + ["--workers", "1"]),
                   f"{n} workers": run_batch(inputs, work / "wn", extra + ["--workers", str(n)])}
        if not args.no_ray:
            ray_temp = tempfile.mkdtemp(prefix="rb", dir="/tmp")  # short: socket paths
            head, address = start_ray(n, ray_temp)
            try:
                results[f"Ray, {n} CPUs"] = run_batch(inputs, work / "ray",
                                                      extra + ["--ray", address])
            finally:
                stop_ray(head)
                shutil.rmtree(ray_temp, ignore_errors=True)
        print(f"CPU: {cpu_model()} ({len(os.sched_getaffinity(0))} cores usable)")
        print(f"{args.videos} videos x 9.2 s (hamilton clip, 640x360), outputs: "
              f"{'jsonl + annotated mp4' if args.out else 'jsonl'}")
        base = results["1 worker"]["speed"]
        print(f"{'mode':16s} {'wall s':>8s} {'CPU s':>8s} {'video s':>8s} "
              f"{'video-s/wall-s':>15s} {'vs 1 worker':>12s} {'processes':>10s}")
        for mode, r in results.items():
            cpu = f"{r['cpu_s']:8.2f}" if not mode.startswith("Ray") else f"{'-':>8s}"
            print(f"{mode:16s} {r['wall_s']:8.2f} {cpu} {r['video_s']:8.2f} "
                  f"{r['speed']:15.3f} {r['speed'] / base:11.2f}x {r['worker_processes']:10d}")
        print(json.dumps(results))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
