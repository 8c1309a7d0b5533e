"""The one assembly of a run: stages from the configuration, and the graph that links them.

Graph (channels named in brackets; sinks appear only when asked for)::

    decode -[frames]-> track -[expression]-> expression -[smooth]-> smooth -[describe]-> describe
    describe -+-[render]-> render -+-[video]---> video
              |                    +-[preview]-> preview
              +-[jsonl]--> jsonl
              +-[csv]----> csv
              +-[vmc]----> vmc
              +-[ws]-----> websocket

(``smooth`` is left out with ``smooth.filter = "none"``; ``expression`` and ``describe``, which
fill each face's expression and head pose, :mod:`tracker.outputs.describe`, when not given,
and when only drawn: ``expression`` always, ``describe`` unless it mirrors or the pose is drawn.)
Files use the ``block`` policy (nothing lost); live sources ``drop_oldest`` (latency bounded).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Sequence
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

from tracker.config.schema import Config, StreamConfig
from tracker.errors import (
    CameraNotFound,
    EncodeError,
    ModelError,
    OutputError,
    PipelineError,
    PreviewUnavailable,
    SourceError,
    StreamError,
    TrackerError,
    UsageError,
)
from tracker.io.source import SourceInfo, VideoSource, open_source, source_kind
from tracker.runtime.pipeline import Pipeline, Stage, StageError
from tracker.runtime.stage import StageChain
from tracker.temporal.smoothing import SmoothStage
from tracker.tracking.face_tracker import Detector, Landmarker, TrackStage

PREVIEW_QUEUE = 2
QUEUE_BYTES = 256 << 20  # frames one queue may hold, in bytes of RGB image (4K: 10 frames)


def queue_capacity(capacity: int, info: SourceInfo) -> int:
    """``capacity`` capped so one queue of full frames stays within :data:`QUEUE_BYTES`."""
    frame_bytes = max(1, info.width * info.height * 3)
    return max(2, min(capacity, QUEUE_BYTES // frame_bytes))


def load_detector(cfg: Config) -> Detector:
    """The configured face detector (raises :class:`ModelError`)."""
    from tracker.detect.detectors import create_detector

    try:
        return create_detector(cfg.detector.name)
    except (ImportError, OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(f"cannot load the face models: {exc}") from None


def load_landmarker(cfg: Config) -> Landmarker:
    """The configured landmark model on its engine, warmed up (raises :class:`ModelError`)."""
    from tracker.landmarker import load_landmarker as load

    try:
        return load(cfg.model.weights, cfg.model.engine, max_faces=cfg.track.max_faces)
    except TrackerError as exc:
        raise ModelError(f"cannot load the face models: {exc}") from None
    except (ImportError, OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(f"cannot load the face models: {exc}") from None


def load_denoiser(cfg: Config) -> Any:
    """The temporal denoiser when enabled and its weights exist, else None."""
    if not cfg.track.temporal:
        return None
    from tracker.temporal.denoiser import TEMPORAL_WEIGHTS, load_temporal

    if not (cfg.track.temporal_weights or TEMPORAL_WEIGHTS.is_file()):
        return None
    try:
        return load_temporal(cfg.track.temporal_weights)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load the temporal model: {exc}") from None


def track_stage(cfg: Config, detector: Detector, landmarker: Landmarker,
                denoiser: Any = None) -> TrackStage:
    """A track stage with the configured gating and ids around the given models."""
    return TrackStage(detector, landmarker, cfg.track, min_score=cfg.detector.min_score,
                      denoiser=denoiser)


def smooth_stage(cfg: Config) -> SmoothStage | None:
    """The configured smoothing stage, or None for ``smooth.filter = "none"``."""
    if cfg.smooth.filter == "none":
        return None
    return SmoothStage(cfg.smooth.params())


def expression_stage(cfg: Config) -> Stage:
    """The stage that measures each face's expression signals (before the smoothing)."""
    from tracker.outputs.describe import ExpressionStage

    return ExpressionStage()


def describe_stage(cfg: Config) -> Stage:
    """The stage that solves each face's head pose (after the smoothing) and mirrors."""
    from tracker.outputs.describe import DescribeStage

    return DescribeStage(cfg.pose, mirror=cfg.run.mirror)


def describe_stages(cfg: Config) -> dict[str, Stage]:
    """``{"expression": ..., "describe": ...}``: the two stages that fill what apps consume."""
    return {"expression": expression_stage(cfg), "describe": describe_stage(cfg)}


def annotator(cfg: Config) -> Callable[..., Any]:
    """The drawing function of ``--out`` / ``--show`` (pose axes with ``pose.draw``)."""
    from functools import partial

    from tracker.outputs.render import annotate

    return partial(annotate, pose=True) if cfg.pose.draw else annotate


def _draws_inplace(annotate: Callable[..., Any]) -> bool:
    """True for :func:`~tracker.outputs.render.annotate` (or a partial of it): it takes
    ``inplace=``."""
    from functools import partial

    from tracker.outputs.render import annotate as render_annotate

    func = annotate.func if isinstance(annotate, partial) else annotate
    return func is render_annotate


def check_outputs(cfg: Config, outputs: dict[str, str | None]) -> None:
    """Outputs that can be written and do not collide (before anything is opened)."""
    from tracker.outputs.paths import check_writable

    named = {flag: path for flag, path in outputs.items() if path}
    for flag, path in named.items():
        check_writable(path, flag)
    flags = list(named)
    for i, a in enumerate(flags):
        for b in flags[i + 1:]:
            pa, pb = named[a], named[b]
            if (pa == "-" and pb == "-") or (
                    "-" not in (pa, pb) and Path(pa).resolve() == Path(pb).resolve()):
                raise UsageError(f"{a} and {b} name the same {'file' if pa != '-' else 'stdout'}")
    src = Path(cfg.run.source or "")
    for flag, path in named.items():
        if path != "-" and src.is_file() and _same_file(Path(path), src):
            raise UsageError(f"{flag} would overwrite the input {cfg.run.source}")


def _same_file(a: Path, b: Path) -> bool:
    """The same path, or the same file under two names (a hard or symbolic link)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def is_live(spec: str) -> bool:
    """True for webcams, network streams and lavfi graphs (they run in real time)."""
    return source_kind(spec) != "file"


def preview_factory(cfg: Config) -> Callable[[], Any]:
    """A factory of the preview window, checked here (raises before any output is opened)."""
    from tracker.outputs.encode import Preview, preview_problem

    problem = preview_problem()
    if problem is not None:
        raise PreviewUnavailable(problem)

    def make() -> Any:
        return Preview(title=f"tracker - {cfg.run.source}")

    return make


def open_video(cfg: Config) -> VideoSource:
    """The configured source, opened (raises :class:`SourceError`)."""
    return open_source(cfg.run.source or "", cfg.source, max_frames=cfg.run.max_frames)


def video_writer(cfg: Config, path: str, info: SourceInfo) -> Any:
    """An H.264 writer for ``path`` sized and timed like the source, with its audio."""
    from tracker.outputs.encode import VideoWriter

    try:
        return VideoWriter(path, info.width, info.height, info.fps or 30.0,
                           audio_source=info.path if info.has_audio else None,
                           time_base=info.time_base, preset=cfg.run.preset, crf=cfg.run.crf)
    except (EncodeError, OSError, ValueError) as exc:
        raise OutputError(f"cannot write {path}: {exc}") from None


def jsonl_sink(path: str) -> Stage:
    """The JSON-lines sink for ``path`` ('-' = stdout)."""
    from tracker.outputs.sinks import JsonlSink

    try:
        return JsonlSink(path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def csv_sink(path: str) -> Stage:
    """The CSV sink for ``path`` ('-' = stdout)."""
    from tracker.outputs.sinks import CsvSink

    try:
        return CsvSink(path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def vmc_sink(address: str) -> Stage:
    """The VMC protocol sender to ``[HOST:]PORT`` (raises :class:`UsageError`)."""
    from tracker.outputs.vmc import VmcSink

    return VmcSink(address)


def file_outputs(cfg: Config, info: SourceInfo, cleanup: ExitStack) -> tuple[Any, Any, Any]:
    """The configured ``(video writer, JSONL sink, CSV sink)``, each None when not asked for,
    opened in that order with their closing registered on ``cleanup`` (so a failure while
    opening one still closes those already open)."""
    r = cfg.run
    writer = jsonl = csv = None
    if r.out:
        writer = video_writer(cfg, r.out, info)
        cleanup.callback(writer.close)
    if r.jsonl:
        jsonl = cleanup.enter_context(closing(jsonl_sink(r.jsonl)))
    if r.csv:
        csv = cleanup.enter_context(closing(csv_sink(r.csv)))
    return writer, jsonl, csv


def source_meta(info: SourceInfo, pose: Any = None, mirrored: bool = False) -> Any:
    """What the websocket hello tells about a source (a ``SourceMeta``); ``pose`` (a
    PoseConfig) gives the camera the head poses are solved with."""
    from tracker.serve.protocol import SourceMeta

    camera = None
    if pose is not None:
        k = pose.camera_matrix(info.width, info.height)
        camera = (float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]))
    return SourceMeta(info.width, info.height, info.fps, camera, mirrored)


def stream_server(cfg: StreamConfig, source: Any = None,
                  streams: Sequence[str] | None = None) -> Any:
    """A started websocket server of one stream (``source``, a ``SourceMeta``) or of several
    (``streams``, their names), or None when no websocket is asked for."""
    from tracker.serve.server import StreamServer

    if not cfg.enabled:
        if cfg.preview or cfg.origins:
            raise UsageError("--ws-preview and --ws-origin need --ws [HOST:]PORT")
        return None
    try:
        options = cfg.options()
    except ValueError as exc:
        raise StreamError(str(exc)) from None
    server = StreamServer(options, source, streams)
    server.start()
    return server


def stream_sink(cfg: StreamConfig, info: SourceInfo, pose: Any = None,
                mirrored: bool = False) -> Any:
    """A started websocket server of one stream in its sink, or None when no websocket is
    asked for; ``pose`` (a PoseConfig) gives the camera the hello announces."""
    from tracker.serve.server import StreamSink

    if not cfg.enabled:
        return stream_server(cfg)  # None, or the usage error of a lone --ws-preview
    return StreamSink(stream_server(cfg, source_meta(info, pose, mirrored)))


def stage_failure(exc: StageError) -> TrackerError:
    """The library error for the first failure of a running stage."""
    err = exc.error
    text = _os_reason(err) if isinstance(err, OSError) else str(err)
    if isinstance(err, CameraNotFound):
        return CameraNotFound(str(err))
    if isinstance(err, SourceError) or (isinstance(err, OSError) and exc.stage == "decode"):
        return SourceError(f"{exc.stage}: {text}")
    if isinstance(err, (PreviewUnavailable, EncodeError, OutputError, OSError)):
        return OutputError(f"{exc.stage}: {text}")
    failed = PipelineError(str(exc), exc.stage)
    failed.__cause__ = err
    return failed


def _os_reason(err: OSError) -> str:
    """``No space left on device: /x/out.mp4``, not ``[Errno 28] No space left ...``."""
    if not err.strerror:
        return str(err)
    return f"{err.strerror}: {err.filename}" if err.filename else err.strerror


def reads_descriptions(sink: Stage | None) -> bool:
    """Whether ``sink`` reads the faces' expression and head pose (a stage says it does not
    with ``reads_descriptions = False``)."""
    return sink is not None and bool(getattr(sink, "reads_descriptions", True))


def build_pipeline(
    cfg: Config,
    source: Stage,
    info: SourceInfo,
    track: Stage,
    *,
    writer: Any = None,
    jsonl: Stage | None = None,
    preview_factory: Callable[[], Any] | None = None,
    annotate: Callable[..., Any] | None = None,
    smooth: Stage | None = None,
    ws: Stage | None = None,
    extra: Stage | None = None,
    csv: Stage | None = None,
    vmc: Stage | None = None,
    expression: Stage | None = None,
    describe: Stage | None = None,
    one_thread: bool = True,
) -> Pipeline:
    """Wire source -> track [-> expression] [-> smooth] [-> describe] -> sinks with the
    configured queue sizes and policy (``extra``: one more sink, e.g. the collector behind
    :meth:`Tracker.track`). With ``one_thread`` the stages after tracking run on the track
    stage's thread (a :class:`StageChain`: each queue hop hands the GIL over); without it
    each has its own thread and queue (streams sharing a batched model: the track thread goes
    straight on to its next frame, so the other streams' requests find it there)."""
    from tracker.outputs.sinks import PreviewSink, RenderStage, VideoSink

    # what is loaded by now (modules, models) lives as long as the process: kept out of the
    # cyclic garbage collector, whose full passes over it took ~20 ms mid-run and ~0.2 s at exit
    gc.freeze()
    pc = cfg.pipeline
    policy = info.policy if pc.policy == "auto" else pc.policy
    queue_size = queue_capacity(pc.queue_size, info)
    sink_queue_size = queue_capacity(pc.sink_queue_size, info)
    p = Pipeline()
    frames = p.channel("frames", queue_size, policy)
    p.add(source, outputs=[frames])
    sinks: list[tuple[str, Stage, int, str]] = []
    if jsonl is not None:
        sinks.append(("jsonl", jsonl, sink_queue_size, policy))
    if csv is not None:
        sinks.append(("csv", csv, sink_queue_size, policy))
    if vmc is not None:
        sinks.append(("vmc", vmc, sink_queue_size, policy))
    if ws is not None:
        sinks.append(("ws", ws, sink_queue_size, policy))
    if extra is not None:
        sinks.append((extra.name, extra, sink_queue_size, policy))
    render_in = None
    track_outputs = []
    if writer is not None or preview_factory is not None:
        if annotate is None:
            from tracker.outputs.render import annotate
        render_in = p.channel("render", sink_queue_size, policy)
        track_outputs.append(render_in)
    sink_inputs = [(stage, p.channel(name, size, pol)) for name, stage, size, pol in sinks]
    track_outputs += [c for _, c in sink_inputs]
    if not any(reads_descriptions(s) for s in (jsonl, csv, vmc, ws, extra)):
        # only drawn (--out / --show): no output reads the expression, nor the head pose unless
        # its axes are drawn; the describe stage stays to mirror
        expression = None
        if not (cfg.pose.draw or cfg.run.mirror):
            describe = None
    after = [s for s in (expression, smooth, describe) if s is not None]
    chain = [StageChain([track, *after])] if after and one_thread else [track, *after]
    upstream = frames
    for stage, following in zip(chain, chain[1:], strict=False):
        link = p.channel(following.name, queue_size, policy)
        p.add(stage, input=upstream, outputs=[link])
        upstream = link
    p.add(chain[-1], input=upstream, outputs=track_outputs)
    if render_in is not None:
        video_in = preview_in = None
        if writer is not None:
            video_in = p.channel("video", sink_queue_size, policy)
        if preview_factory is not None:
            preview_in = p.channel("preview", PREVIEW_QUEUE, "drop_oldest")
        render_outputs = [c for c in (video_in, preview_in) if c is not None]
        # no other stage reads the images after tracking: draw on them, not on copies
        inplace = ws is None and extra is None and _draws_inplace(annotate)
        render = RenderStage(annotate, inplace=inplace)
        if preview_in is not None:
            render.nice = 0  # a preview window is watched live: no slack to give
        p.add(render, input=render_in, outputs=render_outputs)
        if video_in is not None:
            p.add(VideoSink(writer), input=video_in)
        if preview_in is not None:
            p.add(PreviewSink(preview_factory), input=preview_in)
    for stage, channel in sink_inputs:
        p.add(stage, input=channel)
    return p
