"""What ``tracker run`` does: check outputs, open the source, build and run the pipeline, report.

Graph (channels named in brackets; sinks appear only when asked for)::

    decode -[frames]-> track -[smooth]-> smooth -+-[render]-> render -+-[video]---> video (--out)
                                                 |                    +-[preview]-> preview (--show)
                                                 +-[jsonl]--> jsonl (--jsonl)

(``smooth`` is left out with ``--smooth none``.)

Files use the ``block`` policy (nothing lost); live sources ``drop_oldest`` (latency bounded).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
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

from tracker.cli.app import CliError, ExitCode, check_writable
from tracker.config.schema import Config, ConfigError, load_config
from tracker.io.source import CameraNotFound, SourceError, SourceInfo, VideoSource, open_source
from tracker.runtime import faults
from tracker.runtime.pipeline import Metrics, Pipeline, Stage, StageError
from tracker.runtime.signals import graceful_signals
from tracker.tracking.face_tracker import TrackStage, TrackStats

PREVIEW_QUEUE = 2
QUEUE_BYTES = 256 << 20  # frames one queue may hold, in bytes of RGB image (4K: 10 frames)


def queue_capacity(capacity: int, info: SourceInfo) -> int:
    """``capacity`` capped so one queue of full frames stays within :data:`QUEUE_BYTES`."""
    frame_bytes = max(1, info.width * info.height * 3)
    return max(2, min(capacity, QUEUE_BYTES // frame_bytes))


def build_pipeline(
    cfg: Config,
    source: VideoSource,
    track: Stage,
    *,
    writer: Any = None,
    jsonl: Stage | None = None,
    preview_factory: Callable[[], Any] | None = None,
    annotate: Callable[..., Any] | None = None,
    smooth: Stage | None = None,
    ws: Stage | None = None,
) -> Pipeline:
    """Wire source -> track [-> smooth] -> sinks with the configured queue sizes and policy."""
    from tracker.outputs.sinks import PreviewSink, RenderStage, VideoSink

    pc = cfg.pipeline
    policy = source.info.policy if pc.policy == "auto" else pc.policy
    queue_size = queue_capacity(pc.queue_size, source.info)
    sink_queue_size = queue_capacity(pc.sink_queue_size, source.info)
    p = Pipeline()
    frames = p.channel("frames", queue_size, policy)
    p.add(source, outputs=[frames])
    track_outputs = []
    render_in = jsonl_in = None
    if writer is not None or preview_factory is not None:
        if annotate is None:
            from tracker.outputs.render import annotate
        render_in = p.channel("render", sink_queue_size, policy)
        track_outputs.append(render_in)
    if jsonl is not None:
        jsonl_in = p.channel("jsonl", sink_queue_size, policy)
        track_outputs.append(jsonl_in)
    if ws is not None:
        ws_in = p.channel("ws", sink_queue_size, policy)
        track_outputs.append(ws_in)
    if smooth is not None:
        smoothed = p.channel("smooth", queue_size, policy)
        p.add(track, input=frames, outputs=[smoothed])
        p.add(smooth, input=smoothed, outputs=track_outputs)
    else:
        p.add(track, input=frames, outputs=track_outputs)
    if render_in is not None:
        video_in = preview_in = None
        if writer is not None:
            video_in = p.channel("video", sink_queue_size, policy)
        if preview_factory is not None:
            preview_in = p.channel("preview", PREVIEW_QUEUE, "drop_oldest")
        render_outputs = [c for c in (video_in, preview_in) if c is not None]
        p.add(RenderStage(annotate), input=render_in, outputs=render_outputs)
        if video_in is not None:
            p.add(VideoSink(writer), input=video_in)
        if preview_in is not None:
            p.add(PreviewSink(preview_factory), input=preview_in)
    if jsonl is not None:
        p.add(jsonl, input=jsonl_in)
    if ws is not None:
        p.add(ws, input=ws_in)
    return p


def _load(config_path: str | None, overrides: dict[str, Any]) -> Config:
    try:
        return load_config(config_path).with_overrides(overrides)
    except ConfigError as exc:
        raise CliError(str(exc), ExitCode.CONFIG) from None


def _check_outputs(cfg: Config) -> None:
    r = cfg.run
    if r.out:
        check_writable(r.out, "--out")
    if r.jsonl:
        check_writable(r.jsonl, "--jsonl")
    if r.out and r.jsonl and r.jsonl != "-" and Path(r.out).resolve() == Path(r.jsonl).resolve():
        raise CliError("--out and --jsonl name the same file", ExitCode.USAGE)
    src = Path(r.source or "")
    for path, what in ((r.out, "--out"), (r.jsonl, "--jsonl")):
        if path and path != "-" and src.is_file() and Path(path).resolve() == src.resolve():
            raise CliError(f"{what} would overwrite the input {r.source}", ExitCode.USAGE)


def _open(cfg: Config) -> VideoSource:
    try:
        return open_source(cfg.run.source or "", cfg.source_options())
    except CameraNotFound as exc:
        raise CliError(str(exc), ExitCode.NO_CAMERA) from None
    except SourceError as exc:
        raise CliError(str(exc), ExitCode.SOURCE) from None


def _track(cfg: Config) -> TrackStage:
    from tracker.tracking.face_tracker import create_track_stage

    try:
        return create_track_stage(cfg)
    except (ImportError, OSError, ValueError, RuntimeError, KeyError) as exc:
        raise CliError(f"cannot load the face models: {exc}", ExitCode.MODEL) from None


def _writer(cfg: Config, info: SourceInfo) -> Any:
    from tracker.outputs.encode import EncodeError, VideoWriter

    try:
        return VideoWriter(
            cfg.run.out or "",
            info.width,
            info.height,
            info.fps or 30.0,
            audio_source=info.path if info.has_audio else None,
            time_base=info.time_base,
            preset=cfg.run.preset,
            crf=cfg.run.crf,
        )
    except (EncodeError, OSError, ValueError) as exc:
        raise CliError(f"cannot write {cfg.run.out}: {exc}", ExitCode.OUTPUT) from None


def _jsonl(path: str) -> Stage:
    from tracker.outputs.sinks import JsonlSink

    try:
        return JsonlSink(path)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}", ExitCode.OUTPUT) from None


def _stream(cfg: Config, info: SourceInfo) -> Any:
    from tracker.serve.server import StreamError, open_stream

    s = cfg.stream
    if not (s.ws or s.serve_demo):
        if s.preview or s.origins:
            raise CliError("--ws-preview and --ws-origin need --ws [HOST:]PORT", ExitCode.USAGE)
        return None
    try:
        return open_stream(s, info.width, info.height, info.fps)
    except StreamError as exc:
        raise CliError(str(exc), ExitCode.OUTPUT) from None


def _stage_failure(exc: StageError) -> CliError:
    from tracker.outputs.encode import EncodeError, PreviewUnavailable

    err = exc.error
    if isinstance(err, CameraNotFound):
        return CliError(str(err), ExitCode.NO_CAMERA)
    if isinstance(err, SourceError) or (isinstance(err, OSError) and exc.stage == "decode"):
        return CliError(f"{exc.stage}: {err}", ExitCode.SOURCE)
    if isinstance(err, (PreviewUnavailable, EncodeError, OSError)):
        return CliError(f"{exc.stage}: {err}", ExitCode.OUTPUT)
    return CliError(str(exc), ExitCode.FAILED)


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


def summary_table(
    info: SourceInfo, m: Metrics, stats: TrackStats, outputs: list[str], status: str
) -> Table:
    """One screen: throughput, faces, drops, per-stage latency and queue depths."""
    fps_in = f"{info.fps:.2f} fps" if info.fps else "unknown fps"
    t = Table(title=f"tracker run: {status}", show_header=False, box=None, title_justify="left",
              pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
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


def run_tracker(config_path: str | None, overrides: dict[str, Any]) -> ExitCode:
    """Everything ``tracker run`` does; raises CliError for known failures."""
    cfg = _load(config_path, overrides)
    r = cfg.run
    if not r.source:
        raise CliError("no source: give a video file, or --source webcam|URL|lavfi:GRAPH",
                       ExitCode.USAGE)
    _check_outputs(cfg)
    console = Console(stderr=True)
    with ExitStack() as cleanup:
        source = _open(cfg)
        cleanup.callback(source.close)
        track = _track(cfg)
        writer = jsonl = preview = None
        if r.out:
            writer = _writer(cfg, source.info)
            cleanup.callback(writer.close)
        if r.jsonl:
            jsonl = _jsonl(r.jsonl)
            cleanup.callback(jsonl.close)
        ws = _stream(cfg, source.info)
        if ws is not None:
            from tracker.serve.server import describe

            cleanup.callback(ws.close)
            console.print(describe(ws.server), markup=False, highlight=False)
        if r.show:
            from tracker.outputs.encode import Preview

            def preview() -> Any:
                return Preview(title=f"tracker - {r.source}")

        from tracker.temporal.smoothing import create_smooth_stage
        from tracker.tracking.downscale import downscaled

        big = downscaled(track, source.info.width, source.info.height)  # 4K: track a copy
        pipe = build_pipeline(cfg, source, big, writer=writer, jsonl=jsonl,
                              preview_factory=preview, smooth=create_smooth_stage(cfg), ws=ws)
        try:
            faults.inject(pipe, os.environ.get(faults.ENV))
        except ValueError as exc:
            raise CliError(f"{faults.ENV}: {exc}", ExitCode.USAGE) from None
        cleanup.pop_all()  # from here on every stage closes itself in its own thread
        status, code = "finished", ExitCode.OK
        with graceful_signals() as signals:  # a second Ctrl-C exits at once
            try:
                with _progress(console, source.info.frame_count) as update:
                    metrics = pipe.run(on_tick=update)
            except StageError as exc:
                raise _stage_failure(exc) from None
            except KeyboardInterrupt:
                metrics = pipe.metrics()
                term = signals.first == signal.SIGTERM
                code = ExitCode.TERMINATED if term else ExitCode.INTERRUPTED
                status = f"{'terminated' if term else 'interrupted'} (outputs finalised)"
        if pipe.stop_reason and code == ExitCode.OK:
            status = pipe.stop_reason
    outputs = [p for p in (r.out, r.jsonl) if p]
    if ws is not None:
        outputs.append(ws.server.url)
    problem = _input_problem(source, metrics, code if pipe.stop_reason is None else None)
    if problem is not None or source.warning:
        status = "input problem" if problem is not None else "source ended early"
    console.print(summary_table(source.info, metrics, track.stats, outputs, status))
    if problem is not None:
        raise problem
    if source.warning:
        console.print(f"warning: {source.warning}", markup=False, highlight=False, soft_wrap=True)
    return code


def _input_problem(
    source: VideoSource, metrics: Metrics, code: ExitCode | None
) -> CliError | None:
    """A source that gave no frames, or a damaged file (reported after the outputs are done);
    ``code`` is None when the run was stopped early."""
    if code != ExitCode.OK:
        return None
    if metrics.frames == 0:
        why = f": {source.warning}" if source.warning else ""
        return CliError(f"no video frames could be decoded from {source.info.spec}{why}",
                        ExitCode.SOURCE)
    if source.damaged:
        return CliError(source.damaged, ExitCode.DAMAGED_INPUT)
    return None
