"""``tracker batch``: many videos on a local process pool (default) or a Ray cluster.

The work is :func:`tracker.batch.run_batch`; this module parses options, draws a progress bar
across videos and prints the final table. Exit code 0 when every input is done or skipped,
1 (``FAILED``) when any input failed (the table and ``DIR/manifest.jsonl`` say which).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from tracker.cli.app import ExitCode, known_errors
from tracker.cli.tables import key_value_table
from tracker.engines.names import ENGINE_HELP

MAX_FAILURES_SHOWN = 10


class _Bar:
    """The rich progress bar across videos: files done, frames/s overall, ETA."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: Any = None
        self.t0 = time.perf_counter()

    def start(self, total: int, skipped: int) -> None:
        note = f" ({skipped} already done)" if skipped else ""
        self.task = self.progress.add_task(f"videos{note}", total=total, fps=0.0, failed=0)
        self.t0 = time.perf_counter()

    def update(self, row: dict[str, Any], result: Any) -> None:
        elapsed = time.perf_counter() - self.t0
        self.progress.update(self.task, advance=1, failed=len(result.failed),
                             fps=result.frames / elapsed if elapsed > 0 else 0.0)


@contextmanager
def _progress(console: Console) -> Iterator[_Bar]:
    columns = [SpinnerColumn(), TextColumn("[bold]batch[/] {task.description}"), BarColumn(),
               MofNCompleteColumn(), TextColumn("{task.fields[fps]:7.1f} frames/s"),
               TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=True) as progress:
        yield _Bar(progress)


def summary_table(result: Any, out_dir: Path) -> Table:
    """Done / skipped / failed, frames, wall time and video-seconds per wall-second."""
    status = "interrupted" if result.interrupted else "finished"
    t = key_value_table(f"tracker batch: {status}")
    t.add_row("inputs", f"{result.total}: {result.done} done, {result.skipped} skipped "
              f"(already done), {len(result.failed)} failed")
    t.add_row("frames", str(result.frames))
    t.add_row("time", f"{result.wall_seconds:.1f} s wall for {result.video_seconds:.1f} s of "
              f"video: {result.speed:.2f} video-s per wall-s")
    t.add_row("workers", result.backend or "none")
    t.add_row("manifest", escape(str(out_dir / "manifest.jsonl")))
    for row in result.failed[:MAX_FAILURES_SHOWN]:
        t.add_row("failed", escape(f"{row['input']}: {row.get('error')}"))
    if len(result.failed) > MAX_FAILURES_SHOWN:
        t.add_row("", f"... and {len(result.failed) - MAX_FAILURES_SHOWN} more (see the manifest)")
    return t


def batch_command(
    inputs: Annotated[list[str], typer.Argument(
        metavar="INPUTS...", show_default=False,
        help="Video files, folders (searched recursively), globs ('**' recursive), text files "
        "listing one path or URL a line ('#' comments), or '-' for such a list on stdin.")],
    out_dir: Annotated[Path, typer.Option(
        "--out-dir", "-d", show_default=False,
        help="Where outputs go, mirroring the inputs' paths, with manifest.jsonl. With --ray it "
        "must be shared storage every node sees at this path.")],
    jsonl: Annotated[bool, typer.Option(
        "--jsonl", help="Write DIR/NAME.jsonl: landmarks, one JSON line per frame (the default "
        "when neither --jsonl nor --out is given).")] = False,
    out: Annotated[bool, typer.Option(
        "--out", help="Write DIR/NAME.mp4: the annotated video, with the input's audio.")] = False,
    config: Annotated[str | None, typer.Option(
        "--config", "-c", show_default=False, help="TOML config file, or a shipped preset: "
        "default, webcam, offline, fast. Options given here override it.")] = None,
    max_faces: Annotated[int | None, typer.Option(
        min=1, show_default=False, help="Faces tracked at once (default 1).")] = None,
    rescan_every: Annotated[int | None, typer.Option(
        min=0, show_default=False, help="Rerun the face detector every N frames; 0 = only when "
        "a face is missing (default 30).")] = None,
    temporal: Annotated[bool | None, typer.Option(
        "--temporal/--no-temporal", show_default=False,
        help="Temporal denoising model (default on).")] = None,
    smooth: Annotated[str | None, typer.Option(
        show_default=False, help="Landmark smoothing: one_euro or none (default one_euro).")] = None,
    engine: Annotated[str | None, typer.Option(
        show_default=False, help="Landmark engine: " + ENGINE_HELP)] = None,
    weights: Annotated[str | None, typer.Option(
        show_default=False, help="Landmark model weights (default: the shipped model).")] = None,
    max_frames: Annotated[int | None, typer.Option(
        min=0, show_default=False, help="Stop each video after this many frames (0 = all).")] = None,
    preset: Annotated[str | None, typer.Option(
        show_default=False, help="x264 preset of --out (default superfast).")] = None,
    workers: Annotated[int | None, typer.Option(
        min=1, show_default=False, help="Local worker processes, one thread each (default: "
        "the cores; 1 for --engine cuda/tensorrt).")] = None,
    ray: Annotated[str | None, typer.Option(
        "--ray", metavar="ADDRESS", show_default=False,
        help="Run on a Ray cluster instead: auto, HOST:PORT, ray://HOST:PORT, or local (a "
        "throwaway instance here). Needs pip install 'tracker\\[ray]'.")] = None,
    in_flight: Annotated[int | None, typer.Option(
        min=1, show_default=False, help="Videos submitted at once (default: twice the workers, "
        "or the cluster's CPUs/GPUs).")] = None,
    retries: Annotated[int, typer.Option(
        min=0, help="Extra attempts at a video whose worker process died.")] = 2,
    root: Annotated[Path | None, typer.Option(
        show_default=False, help="Mirror input paths relative to this folder (default: the "
        "inputs' common folder).")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Process every input again, even those the manifest says are done.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    """Track many videos: a local process pool by default, or a Ray cluster (--ray); reruns
    skip what is done."""
    with known_errors(debug):
        from tracker.batch import BatchOptions, run_batch
        from tracker.config.schema import load_config

        cfg = load_config(config).with_overrides({
            "run.max_frames": max_frames, "run.preset": preset, "track.max_faces": max_faces,
            "track.rescan_every": rescan_every, "track.temporal": temporal,
            "smooth.filter": smooth, "model.engine": engine, "model.weights": weights,
        })
        if weights is not None and Path(weights).exists():  # a file: the same on every worker
            cfg = cfg.with_overrides({"model.weights": str(Path(weights).resolve())})
        options = BatchOptions(out_dir=out_dir, jsonl=jsonl or not out, video=out,
                               workers=workers, ray=ray, in_flight=in_flight, retries=retries,
                               force=force, root=root)
        console = Console(stderr=True)
        with _progress(console) as bar:
            result = run_batch(inputs, cfg, options, bar)
        console.print(summary_table(result, out_dir.resolve()))
        code = ExitCode.INTERRUPTED if result.interrupted else (
            ExitCode.FAILED if result.failed else ExitCode.OK)
    raise typer.Exit(int(code))
