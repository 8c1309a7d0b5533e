"""A batch end to end: inputs -> jobs -> skip what is done -> a backend -> the manifest.

Presentation-free: progress goes to an optional :class:`Progress` and the outcome comes back
as a :class:`BatchResult` (``tracker batch`` draws the bar and the table).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from tracker.batch.inputs import Job, expand_inputs, output_names, plan_jobs
from tracker.batch.local import default_workers, run_local
from tracker.batch.manifest import Manifest, settings_digest
from tracker.batch.worker import Task
from tracker.config.schema import Config
from tracker.errors import ConfigError, EngineError, ModelError, UsageError, WeightsError

# failures that are not the input's fault: every other video would fail the same way
FATAL = {"ModelError": ModelError, "EngineError": EngineError, "WeightsError": WeightsError,
         "ConfigError": ConfigError}
# per-run keys a batch sets itself (outputs per video) or does not use (preview, websocket)
_NOT_SETTINGS = ("run.source", "run.out", "run.jsonl", "run.show")


@dataclass(frozen=True, slots=True)
class BatchOptions:
    """How a batch runs: where outputs go, which ones, and on what."""

    out_dir: Path
    jsonl: bool = True  # write DIR/KEY.jsonl
    video: bool = False  # write DIR/KEY.mp4 (annotated)
    workers: int | None = None  # local pool processes (default: the cores)
    ray: str | None = None  # Ray address (auto | HOST:PORT | ray://... | local); None = local pool
    in_flight: int | None = None  # videos submitted at once (default 2x workers / cluster slots)
    retries: int = 2  # extra attempts at a video whose worker process died
    force: bool = False  # process inputs the manifest says are done
    root: Path | None = None  # mirror paths below this folder (default: the common one)


@dataclass(slots=True)
class BatchResult:
    """What a batch did (this run only)."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)  # manifest rows
    frames: int = 0
    video_seconds: float = 0.0
    wall_seconds: float = 0.0
    backend: str = ""
    interrupted: bool = False

    @property
    def speed(self) -> float:
        """Seconds of video processed per second of wall time."""
        return self.video_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0


class Progress(Protocol):
    """Receives progress: once the plan is known, then once per finished video."""

    def start(self, total: int, skipped: int) -> None: ...

    def update(self, row: dict[str, Any], result: BatchResult) -> None: ...


def batch_settings(cfg: Config) -> dict[str, Any]:
    """``cfg`` as flat ``section.field`` keys, without the per-video and interactive ones."""
    flat = {f"{section}.{name}": value for section, values in cfg.as_dict().items()
            if isinstance(values, dict)  # [section] tables, not the [[sources]] list
            for name, value in values.items()}
    return {k: v for k, v in flat.items()
            if k not in _NOT_SETTINGS and not k.startswith("stream.")}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_batch(inputs: Sequence[str], cfg: Config, options: BatchOptions,
              progress: Progress | None = None) -> BatchResult:
    """Process every input not already done; failures are recorded, never raised.

    Raises :class:`UsageError` when the inputs name no video, :class:`OutputError` when the
    out-dir cannot be written, and the model's error when the models cannot load (which would
    fail every video). Ctrl-C returns the result so far with ``interrupted`` set.
    """
    if not (options.jsonl or options.video):
        raise UsageError("nothing to write: give --jsonl and/or --out")
    if options.ray:
        from tracker.batch.ray_backend import import_ray

        import_ray()  # not installed: say so before any work
    t0 = time.perf_counter()
    out_dir = options.out_dir.resolve()
    sources = expand_inputs(inputs, exclude=out_dir)
    if not sources:
        raise UsageError(f"no videos found in {' '.join(inputs)}")
    jobs = plan_jobs(sources, options.root)
    settings = batch_settings(cfg)
    digest = settings_digest(settings)
    result = BatchResult(total=len(jobs))
    with Manifest(out_dir) as manifest:
        names = {job.key: output_names(job.key, options.jsonl, options.video) for job in jobs}
        todo = [job for job in jobs if options.force or not manifest.is_complete(
            job.source, job.fingerprint, digest, names[job.key])]
        result.skipped = len(jobs) - len(todo)
        if progress is not None:
            progress.start(len(todo), result.skipped)

        def items() -> Iterator[tuple[Job, Task]]:
            for job in todo:
                outputs = tuple(str(out_dir / n) for n in names[job.key])
                yield job, Task(job.source, outputs, settings, digest)

        def finished(job: Job, row: dict[str, Any]) -> None:
            done = row.get("status") == "done"
            full = manifest.append({
                "input": job.source, "status": "done" if done else "failed",
                "fingerprint": job.fingerprint, "settings": digest,
                "outputs": names[job.key] if done else [], **_fields(row), "at": _now()})
            if done:
                result.done += 1
            else:
                result.failed.append(full)
            result.frames += int(full.get("frames") or 0)
            result.video_seconds += float(full.get("video_seconds") or 0.0)
            result.wall_seconds = time.perf_counter() - t0
            if progress is not None:
                progress.update(full, result)
            fatal = FATAL.get(str(full.get("error_type")))
            if fatal is not None:
                raise fatal(str(full.get("error")))

        workers = _local_workers(options, cfg, len(todo))
        result.backend = (f"Ray cluster {options.ray}" if options.ray else
                          f"local pool of {workers} process{'es' if workers > 1 else ''}")
        try:
            if todo and options.ray:
                from tracker.batch.ray_backend import run_ray

                result.backend = run_ray(items(), finished, options.ray, engine=cfg.model.engine,
                                         in_flight=options.in_flight, retries=options.retries)
            elif todo:
                run_local(items(), finished, workers, in_flight=options.in_flight,
                          retries=options.retries)
        except KeyboardInterrupt:
            result.interrupted = True
    result.wall_seconds = time.perf_counter() - t0
    return result


def _fields(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("frames", "faces", "frames_with_faces", "fps", "seconds", "video_seconds", "error",
            "error_type", "worker")
    return {k: row.get(k) for k in keys}


def _local_workers(options: BatchOptions, cfg: Config, count: int) -> int:
    """Local pool size: ``--workers``, else the cores (one process for a GPU engine), never
    more than the videos to process."""
    workers = options.workers or default_workers()
    if options.workers is None and cfg.model.engine in ("cuda", "tensorrt"):
        workers = 1  # one process per GPU by default; --workers N shares it
    return max(1, min(workers, count))
