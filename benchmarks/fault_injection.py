"""Randomised fault injection into ``tracker run``: every failure stops, reports and finalises.

Each trial runs the real CLI (in this process, on a worker thread) on a short clip with audio,
writing ``--out``, ``--jsonl`` and a ``--ws`` websocket (sometimes with a client reading it),
with random queue sizes and overflow policy, and one fault (see :mod:`tracker.runtime.faults`) at a
random point of a random stage: decode, track, smooth, render, video (encode), jsonl or
websocket; at ``open``, ``close`` or a random item; raising a random exception type.

A trial passes when:

* the CLI returns before the watchdog (no hang);
* it exits non-zero, the last stderr line is ``error: ...`` naming the stage, no traceback;
* the MP4 has its index and decodes, with no error, to exactly the frames the encoder got;
* the JSONL is whole lines with increasing frame numbers.

It also records the time from the fault to the CLI returning (all stages stopped, files
finalised, summary done). A hang dumps every thread's stack and ends the run.

    python benchmarks/fault_injection.py --trials 200            # stub models (plumbing)
    python benchmarks/fault_injection.py --trials 200 --real     # the shipped models
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import io
import json
import os
import random
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from tracker.api import assembly  # noqa: E402
from tracker.cli.app import main  # noqa: E402
from tracker.io.source import mp4_problem  # noqa: E402
from tracker.runtime import faults  # noqa: E402

SHARED_CLIP = ROOT.parent / "shared" / "data" / "videos" / "short_hamilton_clip.mp4"
STAGES = ("decode", "track", "smooth", "render", "video", "jsonl", "websocket")


@dataclass(frozen=True)
class Trial:
    fault: faults.Fault
    policy: str
    queue_size: int
    sink_queue_size: int
    ws_client: bool


@dataclass
class Result:
    trial: str
    hang: bool = False
    code: int | None = None
    last_line: str = ""
    frames_encoded: int | None = None
    mp4_frames: int | None = None
    jsonl_lines: int = 0
    stop_s: float | None = None  # fault raised -> CLI returned
    fired: bool = False  # False: the stage saw fewer items (drop_oldest dropped them)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.hang and not self.problems


def random_trial(rng: random.Random, n_frames: int) -> Trial:
    """One fault at a random point of a random stage, with random queues."""
    r = rng.random()
    when: str | int = "open" if r < 0.1 else "close" if r < 0.2 else rng.randrange(n_frames)
    fault = faults.Fault(rng.choice(STAGES), when, rng.choice(sorted(faults.ERRORS)))
    return Trial(fault, rng.choice(["block", "drop_oldest"]), rng.randint(1, 8),
                 rng.randint(1, 8), rng.random() < 0.5)


def make_clip(path: Path, n_frames: int) -> Path:
    """A 160x120 clip with AAC audio (synthetic: the stub models need no faces; with --real the
    shared clip is used when present)."""
    from synthetic import make_clip as synth

    return synth(path, n_frames=n_frames, width=160, height=120, rate=30, audio=True)


def _read_ws(stderr: io.StringIO, stop: threading.Event) -> None:
    """Connect to the run's websocket once its URL is printed and read until it closes."""
    from websockets.sync.client import connect

    while not stop.is_set():
        found = re.search(r"websocket (ws://\S+)", stderr.getvalue())
        if found:
            break
        time.sleep(0.01)
    else:
        return
    with contextlib.suppress(Exception), connect(found.group(1), open_timeout=5) as ws:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                ws.recv(timeout=0.2)


def _check_outputs(res: Result, out: Path, jsonl: Path) -> None:
    if mp4_problem(out) is not None:
        res.problems.append(f"mp4 not finalised: {mp4_problem(out)}")
        return
    try:
        with av.open(str(out)) as c:
            # no frame reached the encoder: a valid MP4 without tracks is what there is to write
            has_video = bool(c.streams.video)
            res.mp4_frames = sum(1 for _ in c.decode(video=0)) if has_video else 0
    except (av.FFmpegError, OSError) as exc:
        res.problems.append(f"mp4 unplayable: {exc}")
        return
    if res.frames_encoded is not None and res.mp4_frames != res.frames_encoded:
        res.problems.append(f"mp4 has {res.mp4_frames} frames, encoder got {res.frames_encoded}")
    text = jsonl.read_text() if jsonl.exists() else ""
    if text and not text.endswith("\n"):
        res.problems.append("jsonl ends mid-line")
    try:
        frames = [json.loads(line)["frame"] for line in text.splitlines()]
    except (ValueError, KeyError) as exc:
        res.problems.append(f"jsonl line unreadable: {exc}")
        return
    res.jsonl_lines = len(frames)
    if any(b <= a for a, b in zip(frames, frames[1:], strict=False)):
        res.problems.append("jsonl frames not increasing")


def run_trial(trial: Trial, clip: Path, work: Path, extra: list[str], factory: Any,
              watchdog_s: float = 30.0) -> Result:
    """Run one trial; see the module docstring for what is checked."""
    res = Result(str(trial.fault) + f" {trial.policy} q{trial.queue_size}/{trial.sink_queue_size}"
                 + (" +client" if trial.ws_client else ""))
    out, jsonl, cfg = work / "out.mp4", work / "out.jsonl", work / "trial.toml"
    for p in (out, jsonl):
        p.unlink(missing_ok=True)
    cfg.write_text(f'[pipeline]\nqueue_size = {trial.queue_size}\n'
                   f'sink_queue_size = {trial.sink_queue_size}\npolicy = "{trial.policy}"\n')
    writers: list[Any] = []
    make_writer: Callable[..., Any] = assembly.video_writer

    def remember_writer(*args: Any) -> Any:
        w = make_writer(*args)
        writers.append(w)
        return w

    stderr = io.StringIO()
    done = threading.Event()
    codes: list[int] = []
    faults.fired.clear()
    os.environ[faults.ENV] = str(trial.fault)
    assembly.video_writer = remember_writer  # type: ignore[assignment]
    args = ["run", str(clip), "--out", str(out), "--jsonl", str(jsonl), "--config", str(cfg),
            "--ws", "127.0.0.1:0", *extra]

    def work_fn() -> None:
        try:
            codes.append(main(args, tracker_factory=factory))
        finally:
            done.set()

    client_stop = threading.Event()
    try:
        with contextlib.redirect_stderr(stderr):
            worker = threading.Thread(target=work_fn, name="trial", daemon=True)
            worker.start()
            if trial.ws_client:
                threading.Thread(target=_read_ws, args=(stderr, client_stop), daemon=True).start()
            finished = done.wait(watchdog_s)
            returned = time.monotonic()
    finally:
        client_stop.set()
        assembly.video_writer = make_writer  # type: ignore[assignment]
        os.environ.pop(faults.ENV, None)
    if not finished:
        res.hang = True
        res.problems.append(f"no exit within {watchdog_s:g} s")
        faulthandler.dump_traceback(file=sys.stdout, all_threads=True)
        return res
    res.code = codes[0] if codes else None
    lines = [ln for ln in stderr.getvalue().splitlines() if ln.strip()]
    res.last_line = lines[-1] if lines else ""
    res.fired = bool(faults.fired)
    if res.fired:
        res.stop_s = returned - faults.fired[0][1]
        if not res.code:
            res.problems.append(f"exit code {res.code}")
        if not res.last_line.startswith("error: ") or trial.fault.stage not in res.last_line:
            res.problems.append(f"last stderr line does not name the stage: {res.last_line!r}")
    elif res.code != 0:  # the stage never got that far (frames dropped): a clean run
        res.problems.append(f"no fault fired, yet exit code {res.code}")
    if "Traceback" in stderr.getvalue():
        res.problems.append("traceback printed")
    if writers:
        res.frames_encoded = writers[0].frames_written
    _check_outputs(res, out, jsonl)
    return res


def run_trials(n: int, seed: int = 0, real: bool = False, n_frames: int = 24,
               watchdog_s: float = 30.0, log: Callable[[str], None] | None = None,
               ) -> list[Result]:
    """Random trials until ``n`` faults fired (a fault at an item a ``drop_oldest`` stage never
    saw does not fire); stops early after a hang (the process state is then suspect).

    Without ``real`` the stub models stand in for the real ones (through the CLI's
    ``tracker_factory`` seam).
    """
    rng = random.Random(seed)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="faults-") as tmp:
        work = Path(tmp)
        extra: list[str] = []
        factory: Callable[..., Any] | None = None
        if real:
            weights = os.environ.get("TRACKER_TEST_WEIGHTS")
            extra = ["--weights", weights] if weights else []
        else:
            from stubs import stub_tracker

            factory = stub_tracker
        clip = make_clip(work / "clip.mp4", n_frames)
        if real and SHARED_CLIP.exists():  # faces, so the landmark engine runs too
            clip = SHARED_CLIP
            extra += ["--max-frames", str(n_frames)]
        with contextlib.redirect_stderr(io.StringIO()):  # warm-up: imports, JIT, model caches
            main(["run", str(clip), "--jsonl", str(work / "warm.jsonl"), *extra],
                 tracker_factory=factory)
        attempts = 0
        while sum(r.fired for r in results) < n and attempts < 2 * n:
            i, attempts = attempts, attempts + 1
            res = run_trial(random_trial(rng, n_frames), clip, work, extra, factory, watchdog_s)
            results.append(res)
            if log is not None:
                status = "ok" if res.ok else "FAIL " + "; ".join(res.problems)
                stop = f"{res.stop_s:.2f}s" if res.stop_s is not None else "-"
                log(f"{i:4d} {res.trial:42s} code={res.code} stop={stop} "
                    f"enc={res.frames_encoded} mp4={res.mp4_frames} {status}")
            if res.hang:
                break
    return results


def summary(results: list[Result]) -> dict[str, Any]:
    stops = np.array([r.stop_s for r in results if r.stop_s is not None])
    by_stage: dict[str, int] = {}
    for r in results:
        stage = r.trial.split("@", 1)[0]
        by_stage[stage] = by_stage.get(stage, 0) + 1
    return {
        "trials": len(results),
        "faults_fired": sum(r.fired for r in results),
        "passed": sum(r.ok for r in results),
        "hangs": sum(r.hang for r in results),
        "unplayable_outputs": sum(any("mp4" in p for p in r.problems) for r in results),
        "other_failures": sum(not r.ok and not r.hang for r in results),
        "stop_s_median": float(np.median(stops)) if stops.size else None,
        "stop_s_p99": float(np.percentile(stops, 99)) if stops.size else None,
        "stop_s_max": float(stops.max()) if stops.size else None,
        "stop_over_1s": int((stops > 1.0).sum()),
        "trials_per_stage": by_stage,
        "exit_codes": sorted({r.code for r in results if r.code is not None}),
    }


def main_cli() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=24, help="frames in the test clip")
    ap.add_argument("--real", action="store_true",
                    help="the real models (default weights, or $TRACKER_TEST_WEIGHTS)")
    ap.add_argument("--watchdog", type=float, default=30.0, help="seconds before a hang")
    ap.add_argument("--json", type=Path, help="also write every result here")
    a = ap.parse_args()
    t0 = time.monotonic()
    results = run_trials(a.trials, a.seed, a.real, a.frames, a.watchdog, log=print)
    s = summary(results)
    s["wall_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps(s, indent=2))
    if a.json:
        a.json.write_text(json.dumps({"summary": s, "results": [asdict(r) for r in results]},
                                     indent=1))
    return 0 if s["passed"] == s["trials"] and s["faults_fired"] == a.trials else 1


if __name__ == "__main__":
    sys.exit(main_cli())
