"""``Tracker``: the public way to track faces, one frame at a time, over a video, or as a run.

Three running modes (as MediaPipe's): ``image`` (every call stands alone: the detector runs
and no state carries over), ``video`` (frames of one clip in order: tracking, the temporal
denoiser and smoothing; times default to the frame count at 30 fps) and ``live`` (the same,
timed by the wall clock when no time is given).
"""

from __future__ import annotations

import queue
import threading
import time as _time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any

import numpy as np

from tracker.api import assembly
from tracker.config.schema import Config, load_config
from tracker.errors import ConfigError, DamagedInput, SourceError, TrackerError, UsageError
from tracker.io.source import SourceInfo
from tracker.runtime.pipeline import Metrics, Stage, StageError
from tracker.runtime.threads import Worker
from tracker.tracking.face_tracker import Detector, Landmarker, TrackStage, TrackStats
from tracker.types import Frame, TrackedFrame

MODES = ("image", "video", "live")
VIDEO_FPS = 30.0  # frame rate assumed for ``video`` mode frames given without a time


@dataclass(frozen=True, slots=True)
class TrackerOptions:
    """What a :class:`Tracker` does: the run configuration and the running mode."""

    config: Config = field(default_factory=Config)
    mode: str = "video"  # image | video | live

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")

    @property
    def max_faces(self) -> int:
        return self.config.track.max_faces

    @property
    def min_presence(self) -> float:
        return self.config.track.presence_threshold


# short names accepted by from_config(), as MediaPipe users know them
ALIASES = {"max_faces": "track.max_faces", "min_presence": "track.presence_threshold",
           "engine": "model.engine", "weights": "model.weights", "detector": "detector.name",
           "smooth": "smooth.filter", "temporal": "track.temporal", "source": "run.source"}


def config_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """``{"max_faces": 2, "track.rescan_every": 10}`` -> ``section.field`` keys."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        name = ALIASES.get(key, key)
        if "." not in name:
            raise ConfigError(f"unknown option {key!r}: use section.field "
                              f"or one of {', '.join(ALIASES)}")
        out[name] = value
    return out


@dataclass(frozen=True, slots=True)
class RunReport:
    """What :meth:`Tracker.run` did: the source, counters, timings and how it ended."""

    info: SourceInfo
    metrics: Metrics
    stats: TrackStats
    outputs: tuple[str, ...]
    status: str  # finished | interrupted | terminated | the reason a stage stopped the run
    interrupted: bool = False
    warning: str | None = None  # e.g. a live source that ended early
    notes: tuple[str, ...] = ()  # input oddities worked around, e.g. timestamp discontinuities


class _Collect(Stage):
    """The sink behind :meth:`Tracker.track`: hands frames to the caller's thread."""

    name = "collect"

    def __init__(self, out: queue.Queue[Any], stop: threading.Event) -> None:
        self.out, self.stop = out, stop

    def process(self, item: TrackedFrame) -> None:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.1)
                return
            except queue.Full:
                continue


_END = object()


class Tracker:
    """Face landmarks from frames, videos and streams.

    ``detector`` and ``landmarker`` (and ``denoiser``) replace the configured models: the
    injection seam for tests and for custom models. Models load on first use. Not
    thread-safe: use one tracker per thread. Close it (or use ``with``) to free the engine.
    """

    def __init__(self, options: TrackerOptions | None = None, *, detector: Detector | None = None,
                 landmarker: Landmarker | None = None, denoiser: Any = None) -> None:
        self.options = options or TrackerOptions()
        self._detector, self._landmarker, self._denoiser = detector, landmarker, denoiser
        self._injected = landmarker is not None
        self._stage: TrackStage | None = None
        self._smooth: Stage | None = None  # and the expression / describe stages:
        self._expression = self._describe = self._smooth
        self._index = 0
        self._t0: float | None = None
        self.last_report: RunReport | None = None

    @classmethod
    def from_config(cls, config: str | None = None, *, mode: str = "video",
                    detector: Detector | None = None, landmarker: Landmarker | None = None,
                    **overrides: Any) -> Tracker:
        """A tracker from a TOML file or preset name (``webcam``, ``offline``, ``fast``) and
        single-field overrides (``max_faces=2``, ``**{"track.rescan_every": 10}``)."""
        cfg = load_config(config).with_overrides(config_overrides(overrides))
        return cls(TrackerOptions(cfg, mode), detector=detector, landmarker=landmarker)

    @property
    def config(self) -> Config:
        return self.options.config

    # -- models -------------------------------------------------------------------------------

    def _models(self, cfg: Config) -> tuple[Detector, Landmarker, Any]:
        if self._detector is None:
            self._detector = assembly.load_detector(cfg)
        if self._landmarker is None:
            self._landmarker = assembly.load_landmarker(cfg)
        if self._denoiser is None and not self._injected:
            self._denoiser = assembly.load_denoiser(cfg)
        return self._detector, self._landmarker, self._denoiser

    def _track_stage(self, cfg: Config, *, temporal: bool = True) -> TrackStage:
        det, lm, den = self._models(cfg)
        return assembly.track_stage(cfg, det, lm, den if temporal else None)

    @property
    def landmarker(self) -> Landmarker:
        """The landmark model (loaded on first access)."""
        return self._models(self.config)[1]

    @property
    def stats(self) -> TrackStats | None:
        """Counters of :meth:`process` calls so far (None before the first)."""
        return self._stage.stats if self._stage is not None else None

    # -- one frame ----------------------------------------------------------------------------

    def process(self, image: np.ndarray, time: float | None = None,
                color: str = "rgb") -> TrackedFrame:
        """The faces (points, ``pose``, ``expression``) in one ``uint8 (H, W, 3)`` image
        (``color``: rgb or bgr)."""
        image = _as_rgb(image, color)
        mode = self.options.mode
        if time is None:
            if mode == "live":
                now = _time.monotonic()
                self._t0 = now if self._t0 is None else self._t0
                time = now - self._t0
            else:
                time = self._index / VIDEO_FPS
        if self._stage is None or mode == "image":
            self._stage = self._track_stage(self.config, temporal=mode != "image")
            self._smooth = assembly.smooth_stage(self.config) if mode != "image" else None
            self._expression, self._describe = assembly.describe_stages(self.config).values()
        tracked = self._stage.process(Frame(self._index, float(time), image))
        self._index += 1
        for stage in filter(None, (self._expression, self._smooth, self._describe)):
            tracked = stage.process(tracked)
        return tracked

    def reset(self) -> None:
        """Forget every tracked face (a new clip follows)."""
        self._stage = self._smooth = self._expression = self._describe = None
        self._index, self._t0 = 0, None

    # -- a video ------------------------------------------------------------------------------

    def track(self, source: str | None = None) -> Iterator[TrackedFrame]:
        """Tracked frames of a video file, webcam, URL or ``lavfi:`` graph, in order.

        Decoding and tracking run on their own threads; leaving the loop early stops them and
        closes the source before the generator returns.
        """
        cfg = self._with_source(source)
        frames: queue.Queue[Any] = queue.Queue(maxsize=cfg.pipeline.sink_queue_size)
        stop = threading.Event()
        live = assembly.is_live(cfg.run.source or "")
        video = None if live else assembly.open_video(cfg)
        try:
            track = self._track_stage(cfg)
        except BaseException:
            if video is not None:
                video.close()
            raise
        if video is None:
            video = assembly.open_video(cfg)
        pipe = assembly.build_pipeline(cfg, video, video.info, track,
                                       smooth=assembly.smooth_stage(cfg),
                                       extra=_Collect(frames, stop),
                                       **assembly.describe_stages(cfg))
        failure: list[BaseException] = []

        def run() -> None:
            try:
                pipe.run()
            except BaseException as exc:  # handed to the caller's thread
                failure.append(exc)
            finally:
                _put_end(frames, stop)

        worker = Worker(run, name="tracker-track")
        worker.start()
        try:
            while True:
                item = frames.get()
                if item is _END:
                    break
                yield item
        finally:
            stop.set()
            pipe.stop("the consumer stopped", drain=False)
            worker.wait()
        if failure:
            exc = failure[0]
            raise assembly.stage_failure(exc) if isinstance(exc, StageError) else exc
        problem = input_problem(video, pipe.metrics())
        if problem is not None:
            raise problem

    # -- a run with outputs -------------------------------------------------------------------

    def run(self, source: str | None = None, outputs: Sequence[str] | None = None, *,
            on_start: Callable[[SourceInfo, list[str]], None] | None = None,
            on_tick: Callable[[Metrics], None] | None = None) -> RunReport:
        """The threaded pipeline: decode, track, smooth, and write ``outputs``.

        ``outputs`` (default: the config's ``run`` outputs and ``stream.ws``): paths ending in
        ``.jsonl`` (or ``-``, stdout) get JSON lines, ``.csv`` CSV rows, others an annotated
        video; ``show`` opens a preview; ``ws://HOST:PORT`` serves the websocket and
        ``vmc://HOST:PORT`` sends the VMC protocol. Ctrl-C ends the run cleanly
        (``report.interrupted``); every output is finalised whatever happens. A damaged input
        raises :class:`DamagedInput` after the outputs are written (``exc.report``).
        """
        cfg = self._with_source(source)
        if outputs is not None:
            cfg = with_outputs(cfg, outputs)
        r = cfg.run
        if not r.source:
            raise UsageError("no source: give a video file, or --source webcam|URL|lavfi:GRAPH")
        assembly.check_outputs(cfg, {"--out": r.out, "--jsonl": r.jsonl, "--csv": r.csv})
        with ExitStack() as cleanup:
            # a file is opened first (a bad path fails at once); a live source only after the
            # models load, so no frames are decoded and dropped meanwhile
            live = assembly.is_live(r.source)
            video = None if live else assembly.open_video(cfg)
            if video is not None:
                cleanup.callback(video.close)
            track = self._track_stage(cfg)
            if video is None:
                video = assembly.open_video(cfg)
                cleanup.callback(video.close)
            # everything that can still fail comes before any output file is opened (truncated)
            ws = assembly.stream_sink(cfg.stream, video.info, cfg.pose, cfg.run.mirror)
            if ws is not None:
                cleanup.callback(ws.close)
            preview = assembly.preview_factory(cfg) if r.show else None
            vmc = cleanup.enter_context(closing(assembly.vmc_sink(r.vmc))) if r.vmc else None
            writer, jsonl, csv = assembly.file_outputs(cfg, video.info, cleanup)

            from tracker.runtime import faults
            from tracker.tracking.downscale import downscaled

            big = downscaled(track, video.info.width, video.info.height)  # 4K: track a copy
            pipe = assembly.build_pipeline(cfg, video, video.info, big, writer=writer,
                                           jsonl=jsonl, preview_factory=preview,
                                           smooth=assembly.smooth_stage(cfg), ws=ws,
                                           csv=csv, vmc=vmc, annotate=assembly.annotator(cfg),
                                           **assembly.describe_stages(cfg))
            faults.inject_from_env(pipe)
            cleanup.pop_all()  # from here on every stage closes itself in its own thread
        outs = (r.out, r.jsonl, r.csv, f"vmc://{r.vmc}" if r.vmc else None)
        names = [p for p in outs if p] + ([ws.server.url] if ws is not None else [])
        if on_start is not None:
            on_start(video.info, names)
        status, interrupted = "finished", False
        try:
            metrics = pipe.run(on_tick=on_tick)
        except StageError as exc:
            raise assembly.stage_failure(exc) from None
        except KeyboardInterrupt:
            metrics, status, interrupted = pipe.metrics(), "interrupted", True
        if pipe.stop_reason and not interrupted:
            status = pipe.stop_reason
        report = RunReport(video.info, metrics, track.stats, tuple(names), status, interrupted,
                           video.warning, tuple(video.notes))
        self.last_report = report
        problem = None if (interrupted or pipe.stop_reason) else input_problem(video, metrics)
        if problem is not None:
            problem.report = report  # type: ignore[attr-defined]
            raise problem
        return report

    def _with_source(self, source: str | None) -> Config:
        cfg = self.config
        return cfg.with_overrides({"run.source": str(source)}) if source is not None else cfg

    # -- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Release the models (a closed tracker loads them again when used)."""
        engine = getattr(self._landmarker, "engine", None)
        close = getattr(engine, "close", None)
        if callable(close):
            close()
        self._stage = self._smooth = self._expression = self._describe = None
        if not self._injected:
            self._landmarker = self._detector = self._denoiser = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _put_end(frames: queue.Queue[Any], stop: threading.Event) -> None:
    while True:
        try:
            frames.put(_END, timeout=0.1)
            return
        except queue.Full:
            if stop.is_set():
                return


def _as_rgb(image: np.ndarray, color: str) -> np.ndarray:
    if color not in ("rgb", "bgr"):
        raise ConfigError(f"color must be rgb or bgr, got {color!r}")
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise TrackerError(f"expected a uint8 (H, W, 3) image, got {a.dtype} {a.shape}")
    return np.ascontiguousarray(a[:, :, ::-1] if color == "bgr" else a)


def with_outputs(cfg: Config, outputs: Sequence[str]) -> Config:
    """``cfg`` writing exactly ``outputs`` (see :meth:`Tracker.run`)."""
    run = replace(cfg.run, out=None, jsonl=None, csv=None, vmc=None, show=False)
    stream = replace(cfg.stream, ws=None)
    for o in outputs:
        if o == "show":
            run = replace(run, show=True)
        elif o.startswith("ws://"):
            stream = replace(stream, ws=o[len("ws://"):].rstrip("/"))
        elif o.startswith("vmc://"):
            run = replace(run, vmc=o[len("vmc://"):].rstrip("/"))
        elif o == "-" or o.endswith(".jsonl"):
            run = replace(run, jsonl=o)
        elif o.endswith(".csv"):
            run = replace(run, csv=o)
        else:
            run = replace(run, out=o)
    cfg = replace(cfg, run=run, stream=stream)
    cfg.validate()
    return cfg


def input_problem(video: Any, metrics: Metrics) -> TrackerError | None:
    """A source that gave no frames, or a damaged file (reported after the outputs are done)."""
    if metrics.frames == 0:
        why = f": {video.warning}" if video.warning else ""
        return SourceError(f"no video frames could be decoded from {video.info.spec}{why}")
    if video.damaged:
        return DamagedInput(video.damaged)
    return None
