"""Soak test: ``tracker run`` on a 30 fps live lavfi source for minutes, watching for leaks.

Runs the real CLI in this process with a real-time lavfi source (``realtime`` filter; by
default the shared clip looped, so faces are tracked; ``--pattern`` uses testsrc2), the
``drop_oldest`` policy of live sources, and every output: ``--out`` (MP4), ``--jsonl`` and a
``--ws`` websocket with a client reading it. Every ``--interval`` seconds it records the
process RSS, the depth and drops of every queue, and the throughput. At the end it reports RSS
growth (from the first sample, after warm-up, to the last), the deepest each queue got against
its capacity, drops, fps, and checks the outputs are finalised.

    python benchmarks/soak.py --seconds 600               # the full 10 minutes
    python benchmarks/soak.py --seconds 180 --interval 30
    python benchmarks/soak.py --seconds 10 --interval 1 --stub   # plumbing only
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from tracker.cli import run as runner  # noqa: E402
from tracker.cli.app import main  # noqa: E402
from tracker.io.source import mp4_problem  # noqa: E402
from tracker.runtime.pipeline import Metrics  # noqa: E402

SHARED_CLIP = ROOT.parent / "shared" / "data" / "videos" / "short_hamilton_clip.mp4"
FPS = 30


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux /proc; else peak RSS)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def live_source(pattern: bool, size: str = "640x360") -> str:
    """A lavfi graph producing frames in real time at :data:`FPS`."""
    if pattern or not SHARED_CLIP.exists() or ":" in str(SHARED_CLIP):
        return f"lavfi:testsrc2=size={size}:rate={FPS},realtime"
    return f"lavfi:movie=filename={SHARED_CLIP}:loop=0,setpts=N/{FPS}/TB,realtime"


@dataclass
class Sample:
    t: float  # seconds since the start of the run
    rss_mb: float
    fps: float  # frames tracked per second over the last interval
    tracked: int
    dropped: int
    depths: dict[str, int]


@dataclass
class SoakReport:
    source: str
    seconds: float
    samples: list[Sample] = field(default_factory=list)
    capacities: dict[str, int] = field(default_factory=dict)
    max_depths: dict[str, int] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)
    decoded: int = 0
    tracked: int = 0
    exit_code: int | None = None
    mp4_frames: int | None = None
    jsonl_lines: int = 0
    ws_messages: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def rss_growth(self) -> float:
        """Relative RSS change from the first sample to the last."""
        if len(self.samples) < 2:
            return 0.0
        return self.samples[-1].rss_mb / self.samples[0].rss_mb - 1.0

    def summary(self) -> dict[str, Any]:
        fps = [s.fps for s in self.samples[1:]] or [0.0]
        return {
            "source": self.source,
            "seconds": round(self.seconds, 1),
            "rss_mb_first": round(self.samples[0].rss_mb, 1) if self.samples else None,
            "rss_mb_last": round(self.samples[-1].rss_mb, 1) if self.samples else None,
            "rss_mb_max": round(max(s.rss_mb for s in self.samples), 1) if self.samples else None,
            "rss_growth_pct": round(100 * self.rss_growth, 2),
            "fps_mean": round(sum(fps) / len(fps), 2),
            "fps_min": round(min(fps), 2),
            "decoded": self.decoded,
            "tracked": self.tracked,
            "dropped": self.drops,
            "max_depth_of_capacity": {k: f"{self.max_depths[k]}/{self.capacities[k]}"
                                      for k in self.capacities},
            "exit_code": self.exit_code,
            "mp4_frames": self.mp4_frames,
            "jsonl_lines": self.jsonl_lines,
            "ws_messages": self.ws_messages,
            "problems": self.problems,
        }


def _ws_client(stderr: io.StringIO, stop: threading.Event, count: list[int]) -> None:
    from websockets.sync.client import connect

    while not stop.is_set():
        found = re.search(r"websocket (ws://\S+)", stderr.getvalue())
        if found:
            break
        time.sleep(0.05)
    else:
        return
    with contextlib.suppress(Exception), connect(found.group(1), open_timeout=10,
                                                 max_size=None) as ws:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                ws.recv(timeout=0.5)
                count[0] += 1


def soak(seconds: float, interval: float = 30.0, pattern: bool = False, stub: bool = False,
         extra: list[str] | None = None, log: Callable[[str], None] | None = None) -> SoakReport:
    """Run the live soak for ``seconds`` (``seconds * 30`` frames); see the module docstring."""
    source = live_source(pattern)
    report = SoakReport(source, seconds)
    factory = None
    if stub:
        from stubs import stub_tracker as factory
    start = time.monotonic()
    last = {"t": 0.0, "tracked": 0}
    summary = runner.summary_table

    def sample(m: Metrics) -> None:
        now = time.monotonic() - start
        tracked = m.stage("track").count
        for c in m.channels:
            report.capacities[c.name] = c.capacity
            report.max_depths[c.name] = max(report.max_depths.get(c.name, 0), c.depth)
        if now - last["t"] < interval:  # the first sample comes after one interval (warm-up)
            return
        fps = (tracked - last["tracked"]) / (now - last["t"]) if now > last["t"] else 0.0
        s = Sample(now, rss_mb(), fps, tracked, m.dropped, {c.name: c.depth for c in m.channels})
        report.samples.append(s)
        last.update(t=now, tracked=tracked)
        if log is not None:
            depths = " ".join(f"{k}={v}" for k, v in s.depths.items())
            log(f"t={now:7.1f}s rss={s.rss_mb:7.1f} MiB fps={fps:5.1f} tracked={tracked} "
                f"dropped={m.dropped} depths: {depths}")

    final: list[Metrics] = []

    @contextlib.contextmanager
    def progress(console: object, total: int | None) -> Iterator[Callable[[Metrics], None]]:
        yield sample

    def table(run: Any, status: str) -> Any:
        final[:] = [run.metrics]  # the metrics of the finished run
        return summary(run, status)

    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        out, jsonl = Path(tmp) / "soak.mp4", Path(tmp) / "soak.jsonl"
        args = ["run", "--source", source, "--max-frames", str(int(seconds * FPS)),
                "--policy", "drop_oldest", "--out", str(out), "--jsonl", str(jsonl),
                "--ws", "127.0.0.1:0", *(extra or [])]
        stderr, stop, messages = io.StringIO(), threading.Event(), [0]
        client = threading.Thread(target=_ws_client, args=(stderr, stop, messages), daemon=True)
        saved, summary = runner._progress, runner.summary_table
        runner._progress, runner.summary_table = progress, table  # type: ignore[assignment]
        try:
            with contextlib.redirect_stderr(stderr):
                client.start()
                report.exit_code = main(args, tracker_factory=factory)
        finally:
            runner._progress, runner.summary_table = saved, summary  # type: ignore[assignment]
            stop.set()
            client.join(5)
        report.seconds = time.monotonic() - start
        report.ws_messages = messages[0]
        if final:
            m = final[0]
            report.decoded = m.frames
            report.tracked = m.stage("track").count
            report.drops = {c.name: c.dropped for c in m.channels}
        if report.exit_code != 0:
            tail = stderr.getvalue().strip().splitlines()[-1:] or [""]
            report.problems.append(f"exit code {report.exit_code}: {tail[0]}")
        problem = mp4_problem(out)
        if problem is not None:
            report.problems.append(f"mp4: {problem}")
        else:
            import av

            with av.open(str(out)) as c:  # demux (not decode): a long file, checked quickly
                report.mp4_frames = sum(1 for p in c.demux(video=0) if p.size)
        text = jsonl.read_text()
        if text and not text.endswith("\n"):
            report.problems.append("jsonl ends mid-line")
        report.jsonl_lines = text.count("\n")
    for name, depth in report.max_depths.items():
        if depth > report.capacities[name]:
            report.problems.append(f"queue {name} reached {depth} > capacity")
    return report


def main_cli() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--interval", type=float, default=30.0, help="seconds between samples")
    ap.add_argument("--pattern", action="store_true", help="testsrc2 instead of the looped clip")
    ap.add_argument("--stub", action="store_true", help="stub models (pipeline only)")
    ap.add_argument("--weights", help="landmark weights (default: the shipped ones)")
    ap.add_argument("--json", type=Path, help="write the full report here")
    a = ap.parse_args()
    extra = ["--weights", a.weights] if a.weights else []
    report = soak(a.seconds, a.interval, a.pattern, a.stub, extra, log=print)
    s = report.summary()
    print(json.dumps(s, indent=2))
    if a.json:
        a.json.write_text(json.dumps({"summary": s, "samples": [asdict(x) for x in
                                                                 report.samples]}, indent=1))
    return 0 if not report.problems else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main_cli())
