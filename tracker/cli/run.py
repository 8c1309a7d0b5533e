"""What ``tracker run`` does on the terminal: a progress bar, the summary table, exit codes.

The work itself is :meth:`tracker.api.Tracker.run`; this module only presents it.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from rich.console import Console
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

from tracker.api import RunReport, Tracker, TrackerOptions
from tracker.cli.errors import ExitCode
from tracker.cli.tables import key_value_table
from tracker.config.schema import load_config
from tracker.errors import TrackerError
from tracker.io.source import SourceInfo
from tracker.runtime.pipeline import Metrics
from tracker.runtime.signals import Interrupts


@contextmanager
def _progress(console: Console, total: int | None) -> Iterator[Callable[[Metrics], None]]:
    columns: list[Any] = [SpinnerColumn(), TextColumn("[bold]tracking")]
    if total:
        columns += [BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    else:
        columns += [TextColumn("{task.completed} frames")]
    columns += [TextColumn("{task.fields[fps]:6.1f} fps"), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("run", total=total, fps=0.0)

        def update(m: Metrics) -> None:
            done = m.stage("track").count
            progress.update(task, completed=done, fps=done / m.seconds if m.seconds else 0.0)

        yield update


def summary_table(report: RunReport, status: str) -> Table:
    """One screen: throughput, faces, drops, per-stage latency and queue depths."""
    info, m, stats, outputs = report.info, report.metrics, report.stats, report.outputs
    fps_in = f"{info.fps:.2f} fps" if info.fps else "unknown fps"
    t = key_value_table(f"tracker run: {status}")
    live = "live" if info.is_live else info.kind
    t.add_row("source", f"{info.spec} ({info.width}x{info.height}, {fps_in}, {live})")
    dropped = sum(c.dropped for c in m.channels if c.name != "preview")
    t.add_row("frames", f"{m.frames} decoded, {stats.frames} tracked, {dropped} dropped")
    t.add_row("speed", f"{stats.frames / m.seconds if m.seconds else 0.0:.1f} fps "
              f"over {m.seconds:.1f} s")
    t.add_row("faces", f"{stats.faces_found} found; faces in {stats.frames_with_faces}/"
              f"{stats.frames} frames; detector ran {stats.detector_runs} times")
    t.add_row("outputs", ", ".join(outputs) or "none")
    stages = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("stage", "items", "median ms", "p99 ms"):
        stages.add_column(col, justify="left" if col == "stage" else "right")
    for s in m.stages:
        stages.add_row(s.name, str(s.count), f"{s.p50_ms:.2f}", f"{s.p99_ms:.2f}")
    queues = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("queue", "policy", "max depth", "dropped"):
        queues.add_column(col, justify="left" if col in ("queue", "policy") else "right")
    for c in m.channels:
        queues.add_row(c.name, c.policy, f"{c.max_depth}/{c.capacity}", str(c.dropped))
    t.add_row("stages", stages)
    t.add_row("queues", queues)
    return t


def run_tracker(config_path: str | None, overrides: dict[str, Any],
                signals: Interrupts | None = None,
                factory: Callable[[TrackerOptions], Tracker] | None = None,
                sources: Sequence[str] | None = None) -> ExitCode:
    """Everything ``tracker run`` does; raises :class:`~tracker.errors.TrackerError` for known
    failures (after printing the summary when the run got that far). Several ``sources``,
    or a config's ``[[sources]]`` without a source given, run as streams
    (:mod:`tracker.cli.streams`)."""
    if overrides.get("run.vmc"):  # a bad --vmc is a usage error, not a config one
        from tracker.outputs.vmc import parse_vmc_address

        parse_vmc_address(overrides["run.vmc"])
    cfg = load_config(config_path).with_overrides(overrides)
    if sources or (cfg.sources and not cfg.run.source):
        from tracker.cli.streams import run_streams

        return run_streams(cfg, sources, signals, factory)
    console = Console(stderr=True)
    from tracker.api.stills import is_stills

    if is_stills(cfg.run.source):
        return _run_stills(console, cfg, factory)
    updates: list[Callable[[Metrics], None]] = []
    tracker = (factory or Tracker)(TrackerOptions(cfg))
    try:
        with ExitStack() as bars:
            def started(info: SourceInfo, outputs: list[str]) -> None:
                for url in (o for o in outputs if o.startswith("ws://")):
                    demo = f" (demo page {url.replace('ws://', 'http://', 1)})"
                    console.print(f"websocket {url}{demo if cfg.stream.serve_demo else ''}",
                                  markup=False, highlight=False)
                updates.append(bars.enter_context(_progress(console, info.frame_count)))

            report = tracker.run(on_start=started, on_tick=lambda m: [u(m) for u in updates])
    except TrackerError as exc:
        failed: RunReport | None = getattr(exc, "report", None)
        if failed is not None:
            console.print(summary_table(failed, "input problem"))
            _print_notes(console, failed)
        raise
    finally:
        tracker.close()
    code, status = ExitCode.OK, report.status
    if report.interrupted:
        term = signals is not None and signals.first == signal.SIGTERM
        code = ExitCode.TERMINATED if term else ExitCode.INTERRUPTED
        status = f"{'terminated' if term else 'interrupted'} (outputs finalised)"
    elif report.warning and status == "finished":
        status = "source ended early"
    console.print(summary_table(report, status))
    _print_notes(console, report)
    if report.warning and code == ExitCode.OK:
        console.print(f"warning: {report.warning}", markup=False, highlight=False, soft_wrap=True)
    return code


def _print_notes(console: Console, report: RunReport) -> None:
    """One ``warning:`` line per oddity of the input that the run worked around."""
    for note in report.notes:
        console.print(f"warning: {note}", markup=False, highlight=False, soft_wrap=True)


def _run_stills(console: Console, cfg: Any,
                factory: Callable[[TrackerOptions], Tracker] | None) -> ExitCode:
    """``tracker run`` on still images: a warning line per unusable image, then a summary."""
    from tracker.api.stills import run_stills

    def warn(text: str) -> None:
        console.print(f"warning: {text}", markup=False, highlight=False, soft_wrap=True)

    report = run_stills(cfg, factory, warn)
    status = "interrupted (outputs finalised)" if report.interrupted else "finished"
    t = key_value_table(f"tracker run: {status}")
    t.add_row("images", f"{report.images} processed, {len(report.skipped)} skipped "
              f"in {report.seconds:.1f} s")
    t.add_row("faces", str(report.faces))
    t.add_row("outputs", ", ".join(report.outputs) or "none")
    console.print(t)
    return ExitCode.INTERRUPTED if report.interrupted else ExitCode.OK
