"""One video in a worker process: a cached :class:`~tracker.api.Tracker`, temp outputs.

The same code runs in a local pool process and in a Ray worker. :func:`init_worker` pins every
thread pool to one thread *before* torch, OpenVINO or Numba are imported, so N workers use N
cores without oversubscribing. The tracker (and so the models) is built on the first video of a
process and reused for every later one with the same settings. Outputs are written to hidden
temp names beside their final names and renamed only when the video finished, so a crash never
leaves a partial file under a final name.

This module imports nothing heavy at import time.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracker.api import RunReport, Tracker

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
              "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMBA_NUM_THREADS")
PART = ".part-"  # temp outputs: .NAME.part-HOST-PID.EXT beside NAME

_tracker: tuple[str, Tracker] | None = None  # (settings digest, tracker) of this process
_initialised = False


@dataclass(frozen=True, slots=True)
class Task:
    """What a worker needs for one video (picklable, small)."""

    source: str  # file path or URL, as the worker opens it
    outputs: tuple[str, ...]  # absolute final paths: .jsonl = landmarks, else annotated video
    settings: dict[str, Any]  # the run configuration as flat ``section.field`` keys
    digest: str  # of ``settings``: the tracker cache key


def thread_env(threads: int = 1) -> dict[str, str]:
    """Environment variables that size the BLAS/OpenMP/Numba thread pools."""
    return {name: str(threads) for name in THREAD_ENV}


def init_worker(threads: int = 1) -> None:
    """Pin this process's thread pools to ``threads`` (call before heavy imports; once)."""
    global _initialised
    if _initialised:
        return
    os.environ.update(thread_env(threads))
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already used: keep what it has
        pass
    _initialised = True


def init_pool_worker(threads: int = 1) -> None:
    """Initializer of a local pool process: single-threaded, and Ctrl-C is the parent's."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    init_worker(threads)


def part_path(final: Path) -> Path:
    """The temp name ``final`` is written under by this process (same folder, same suffix)."""
    return final.with_name(f".{final.name}{PART}{socket.gethostname()}-{os.getpid()}{final.suffix}")


def remove_parts(final: Path) -> None:
    """Delete temp files of ``final`` left by any earlier, killed attempt."""
    for stale in final.parent.glob(f".{_glob_escape(final.name)}{PART}*"):
        try:
            stale.unlink()
        except OSError:
            pass


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def cached_tracker(settings: dict[str, Any], digest: str) -> Tracker:
    """This process's tracker for ``settings`` (built, with its models, on first use)."""
    global _tracker
    if _tracker is not None and _tracker[0] == digest:
        return _tracker[1]
    from tracker.api import Tracker, TrackerOptions
    from tracker.config.schema import Config

    if _tracker is not None:
        _tracker[1].close()
    tracker = Tracker(TrackerOptions(Config().with_overrides(settings)))
    _tracker = (digest, tracker)
    return tracker


def _one_line(exc: BaseException) -> str:
    from tracker.errors import TrackerError

    text = str(exc) if isinstance(exc, TrackerError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split()) or type(exc).__name__


def _counts(report: RunReport | None) -> dict[str, Any]:
    if report is None:
        return {"frames": 0, "faces": 0, "frames_with_faces": 0, "fps": 0.0,
                "video_seconds": 0.0}
    stats, m, fps = report.stats, report.metrics, report.info.fps
    return {"frames": stats.frames, "faces": stats.faces_found,
            "frames_with_faces": stats.frames_with_faces,
            "fps": round(stats.frames / m.seconds, 2) if m.seconds > 0 else 0.0,
            "video_seconds": round(stats.frames / fps, 4) if fps and fps > 0 else 0.0}


def run_task(task: Task) -> dict[str, Any]:
    """Process one video; never raises for a bad input: returns its manifest fields.

    ``status`` is ``done`` (outputs renamed to their final names) or ``failed`` (no output
    left behind; ``error`` is one line, ``error_type`` the exception class).
    """
    init_worker()
    t0 = time.perf_counter()
    finals = [Path(p) for p in task.outputs]
    parts = [part_path(p) for p in finals]
    report = None
    row: dict[str, Any] = {"status": "done", "error": None, "error_type": None}
    try:
        for final in finals:
            final.parent.mkdir(parents=True, exist_ok=True)
            remove_parts(final)
        tracker = cached_tracker(task.settings, task.digest)
        report = tracker.run(task.source, outputs=[str(p) for p in parts])
        if report.interrupted or report.status != "finished":
            raise RuntimeError(f"the run stopped early: {report.status}")
        for part, final in zip(parts, finals, strict=True):
            os.replace(part, final)
    except Exception as exc:  # one bad video never stops the batch
        report = report or getattr(exc, "report", None)
        row = {"status": "failed", "error": _one_line(exc), "error_type": type(exc).__name__}
        for part in parts:
            try:
                part.unlink()
            except OSError:
                pass
    row.update(_counts(report))
    row["seconds"] = round(time.perf_counter() - t0, 4)
    row["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    return row
