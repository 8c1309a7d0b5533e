"""What ``tracker run`` with several sources shows: progress over all streams, one summary row
per stream, the shared model's batches, a warning per stream that failed, and the exit code.

Exit code: 0 when at least one stream ran to its end (the streams that failed are
``warning:`` lines naming them); when every stream failed, the first stream's error decides
it, as for a single source; 130 / 143 when interrupted.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from tracker.api import MultiReport, StreamReport, Tracker, TrackerOptions, run_many
from tracker.cli.errors import ExitCode
from tracker.config.schema import Config
from tracker.errors import PipelineError, TrackerError
from tracker.runtime.pipeline import Metrics
from tracker.runtime.signals import Interrupts


@contextmanager
def _progress(console: Console, streams: int) -> Iterator[Callable[[dict[str, Metrics]], None]]:
    columns: list[Any] = [SpinnerColumn(), TextColumn(f"[bold]tracking {streams} streams"),
                          TextColumn("{task.completed} frames"),
                          TextColumn("{task.fields[fps]:6.1f} fps"), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("run", total=None, fps=0.0)

        def update(metrics: dict[str, Metrics]) -> None:
            done = sum(m.stage("track").count for m in metrics.values())
            fps = sum(m.stage("track").count / m.seconds for m in metrics.values() if m.seconds)
            progress.update(task, completed=done, fps=fps)

        yield update


def _status(s: StreamReport) -> str:
    if s.error is not None:
        return "failed"
    assert s.report is not None
    if s.report.interrupted:
        return "stopped"
    if s.report.warning and s.report.status == "finished":
        return "source ended early"
    return s.report.status


def batching_line(report: MultiReport) -> str:
    """How the landmark model served the streams."""
    b = report.batching
    n = len(report.streams)
    if b is None:
        return f"one landmark model per stream ({n})"
    if not b.calls:
        return f"one landmark model shared by {n} streams: no faces to run"
    return (f"one landmark model shared by {n} streams: {b.calls} calls, "
            f"{b.streams_per_call:.2f} streams and {b.faces_per_call:.2f} faces a call "
            f"(largest {b.max_faces}); {b.full} of the calls had every stream mid-frame in; "
            f"requests waited p50 {b.wait_p50_ms:.2f} / p99 {b.wait_p99_ms:.2f} ms")


def summary_table(report: MultiReport, status: str) -> Table:
    """One row per stream: frames decoded / tracked, drops, speed, faces, latency, how it
    ended (the sources are listed by :func:`source_lines`)."""
    t = Table(title=f"tracker run: {len(report.streams)} streams, {status}", box=None,
              title_justify="left", pad_edge=False, header_style="bold")
    for col in ("stream", "frames", "dropped", "fps", "faces", "ms p50/p99", "status"):
        t.add_column(col, justify="left" if col in ("stream", "status") else "right")
    for s in report.streams:
        r = s.report
        if r is None:
            t.add_row(s.name, "-", "-", "-", "-", "-", _status(s))
            continue
        m, st = r.metrics, r.stats
        fps = st.frames / m.seconds if m.seconds else 0.0
        t.add_row(s.name, f"{m.frames}/{st.frames}", str(s.dropped), f"{fps:.1f}",
                  f"{st.faces_found} ({st.frames_with_faces} fr)",
                  f"{s.latency_p50_ms:.1f}/{s.latency_p99_ms:.1f}", _status(s))
    return t


def source_lines(report: MultiReport) -> list[str]:
    """``source NAME: SPEC (WxH, fps, kind)`` per stream."""
    lines = []
    for s in report.streams:
        info = s.report.info if s.report is not None else None
        about = "" if info is None else (
            f" ({info.width}x{info.height}, {info.fps:.2f} fps, "
            f"{'live' if info.is_live else info.kind})")
        lines.append(f"source {s.name}: {s.spec}{about}")
    return lines


def _say(console: Console, line: str) -> None:
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def run_streams(cfg: Config, sources: Sequence[str] | None, signals: Interrupts | None = None,
                factory: Callable[[TrackerOptions], Tracker] | None = None) -> ExitCode:
    """``tracker run`` over several sources (``sources``, else the config's ``[[sources]]``);
    raises the first stream's error when every stream failed."""
    console = Console(stderr=True)
    tracker = (factory or Tracker)(TrackerOptions(cfg))
    updates: list[Callable[[dict[str, Metrics]], None]] = []
    try:
        with ExitStack() as bars:
            def started(names: list[str]) -> None:
                updates.append(bars.enter_context(_progress(console, len(names))))

            def serving(url: str) -> None:
                demo = f" (demo page {url.replace('ws://', 'http://', 1)})"
                _say(console, f"websocket {url}{demo if cfg.stream.serve_demo else ''}")

            report = run_many(tracker, sources, on_start=started, on_serve=serving,
                              on_tick=lambda m: [u(m) for u in updates])
    finally:
        tracker.close()
    failed = report.failed
    code, status = ExitCode.OK, "finished"
    if report.interrupted:
        term = signals is not None and signals.first == signal.SIGTERM
        code = ExitCode.TERMINATED if term else ExitCode.INTERRUPTED
        status = f"{'terminated' if term else 'interrupted'} (outputs finalised)"
    elif failed and len(failed) == len(report.streams):
        status = "every stream failed"
    elif failed:
        status = f"{len(failed)} of {len(report.streams)} streams failed"
    for line in source_lines(report):
        _say(console, line)
    console.print(summary_table(report, status))
    _say(console, batching_line(report))
    outputs = [o for s in report.streams for o in s.outputs]
    outputs += [report.websocket] if report.websocket else []
    _say(console, f"outputs: {', '.join(outputs) or 'none'}")
    last = failed[0] if failed and len(failed) == len(report.streams) else None
    for s in report.streams:
        r = s.report
        for note in r.notes if r is not None else ():
            _say(console, f"warning: stream {s.name!r}: {note}")
        if s.error is not None and s is not last:
            _say(console, f"warning: stream {s.name!r} ({s.spec}) failed: {s.error}")
        elif r is not None and r.warning and s.error is None:
            _say(console, f"warning: stream {s.name!r}: {r.warning}")
    if last is not None and code == ExitCode.OK:
        raise _named(last)
    return code


def _named(stream: StreamReport) -> TrackerError:
    """The stream's error, of the same class (so the same exit code), naming the stream."""
    error = stream.error
    assert error is not None
    text = f"stream {stream.name!r}: {error}"
    named = PipelineError(text, error.stage) if isinstance(error, PipelineError) else None
    try:
        named = named or type(error)(text)
    except TypeError:  # a class with other arguments: keep it as it is
        return error
    named.__cause__ = error.__cause__
    return named
