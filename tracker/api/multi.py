"""Several streams in one process: a pipeline per source, one landmark model shared by all.

Each source gets its own decode -> track -> smooth -> sinks pipeline (see
:mod:`tracker.api.assembly`), run on its own thread with its own face ids, smoothing and
outputs. Their track stages share one landmark model through
:class:`~tracker.tracking.batcher.SharedLandmarker`, which batches the faces of all streams
into one call (``[pipeline] batch_streams``; ``false`` gives every stream its own model).
A stream whose source cannot be opened, fails, stalls or hangs up ends alone, its error kept in
its :class:`StreamReport`, while the others go on; Ctrl-C stops them all.

Output paths are templates: ``{stream}`` becomes a stream's 0-based index and ``{name}`` its
name (:func:`tracker.config.sources.stream_names`); with several sources each output must
hold one of them. A websocket (``--ws``) is one server for the whole run, started before any
source opens: every stream publishes its frames to it under its name and ends with a
``stream_end`` (docs/protocol.md).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tracker.api import assembly
from tracker.api.tracker import RunReport, input_problem, with_outputs
from tracker.config.schema import Config
from tracker.config.sources import SourceEntry, is_template, stream_names, stream_path
from tracker.errors import PipelineError, TrackerError, UsageError
from tracker.runtime.pipeline import Metrics, Pipeline, Stage, StageError
from tracker.runtime.threads import Worker
from tracker.temporal.denoiser import TemporalDenoiser
from tracker.tracking.batcher import BatchClient, BatchedTrack, BatchStats, SharedLandmarker
from tracker.tracking.downscale import downscaled
from tracker.types import TrackedFrame

if TYPE_CHECKING:
    from tracker.api.tracker import Tracker


@dataclass(frozen=True, slots=True)
class StreamReport:
    """How one stream of :func:`run_many` went. ``report`` is None when its source could not
    be opened; ``error`` is why it failed (None: it finished or was stopped)."""

    name: str
    spec: str
    report: RunReport | None
    error: TrackerError | None = None
    outputs: tuple[str, ...] = ()
    latency_p50_ms: float = 0.0  # decoded frame -> sinks (wall clock)
    latency_p99_ms: float = 0.0

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def dropped(self) -> int:
        """Frames dropped by this stream's queues (live sources that fell behind)."""
        if self.report is None:
            return 0
        return sum(c.dropped for c in self.report.metrics.channels if c.name != "preview")


@dataclass(frozen=True, slots=True)
class MultiReport:
    """What :func:`run_many` did: one report per stream, in the order of the sources, and the
    shared model's batches (None with one model per stream)."""

    streams: tuple[StreamReport, ...]
    batching: BatchStats | None
    seconds: float
    interrupted: bool = False
    websocket: str | None = None  # the URL of the run's websocket server

    @property
    def failed(self) -> tuple[StreamReport, ...]:
        return tuple(s for s in self.streams if s.failed)


class LatencySink(Stage):
    """Times each tracked frame from its decoding to the sinks (wall clock)."""

    name = "latency"
    reads_descriptions = False  # times the frames only

    def __init__(self) -> None:
        self.samples: list[float] = []

    def process(self, item: TrackedFrame) -> None:
        wall = item.frame.wall_time
        if wall:
            self.samples.append((time.time() - wall) * 1e3)
            if len(self.samples) > 200_000:
                del self.samples[:100_000]

    def percentiles(self) -> tuple[float, float]:
        """(p50, p99) in ms; zeros before the first frame."""
        if not self.samples:
            return 0.0, 0.0
        p50, p99 = np.percentile(np.asarray(self.samples[:]), [50, 99])
        return float(p50), float(p99)


class _Locked:
    """A model shared by the stream threads, called one call at a time."""

    def __init__(self, target: Any) -> None:
        self._target, self._lock = target, threading.Lock()

    def __getattr__(self, attr: str) -> Any:
        if attr in ("_target", "_lock"):
            raise AttributeError(attr)
        value = getattr(self._target, attr)
        if not callable(value):
            return value

        @functools.wraps(value)
        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return value(*args, **kwargs)

        return call


def stream_configs(cfg: Config, entries: Sequence[SourceEntry],
                   names: Sequence[str]) -> list[Config]:
    """One config per stream with its source and output paths, all checked before anything is
    opened (raises :class:`UsageError` / :class:`~tracker.errors.OutputError`)."""
    r = cfg.run
    if len(entries) > 1:
        if r.show:
            raise UsageError("--show with several sources is not supported yet")
        if r.vmc:
            raise UsageError("--vmc with several sources is not supported yet")
        for flag, path, example in (("--out", r.out, "out_{stream}.mp4"),
                                    ("--jsonl", r.jsonl, "{name}.jsonl"),
                                    ("--csv", r.csv, "{name}.csv")):
            if path and not is_template(path):
                raise UsageError(f"{flag} {path} with several sources must name a file per "
                                 f"stream: put {{stream}} or {{name}} in it, e.g. {example}")
    inputs = {str(Path(e.source).resolve()): n for e, n in zip(entries, names, strict=True)
              if Path(e.source).is_file()}
    written: dict[str, str] = {}
    configs = []
    for i, (entry, name) in enumerate(zip(entries, names, strict=True)):
        run = replace(r, source=entry.source, out=stream_path(r.out, i, name),
                      jsonl=stream_path(r.jsonl, i, name), csv=stream_path(r.csv, i, name))
        c = replace(cfg, run=run, sources=())
        assembly.check_outputs(c, {"--out": run.out, "--jsonl": run.jsonl, "--csv": run.csv})
        for path in (p for p in (run.out, run.jsonl, run.csv) if p and p != "-"):
            key = str(Path(path).resolve())
            if key in inputs:
                raise UsageError(f"{path} would overwrite the input of stream {inputs[key]!r}")
            if key in written:
                raise UsageError(f"streams {written[key]!r} and {name!r} would write the same "
                                 f"file {path}")
            written[key] = name
        configs.append(c)
    return configs


class _Models:
    """Each stream's detector, landmark model and denoiser. Landmarks: one model behind a
    batcher, or one model per stream; detectors and denoisers: one per stream, or, when given
    to the tracker, one shared by all and called one at a time."""

    def __init__(self, tracker: Tracker, cfg: Config, n: int) -> None:
        given_detector = tracker._detector is not None
        self.detector, self.landmarker, self.denoiser = tracker._models(cfg)
        self.cfg, self.injected = cfg, tracker._injected
        self._shared_detector = _Locked(self.detector) if given_detector else None
        self._shared_landmarker: Any = None
        self._loaded: list[Any] = []  # landmark models loaded here, closed by close()
        self.batcher: SharedLandmarker | None = None
        if cfg.pipeline.batch_streams:
            self.batcher = SharedLandmarker(self.landmarker, cfg.pipeline.batch_wait_ms / 1e3)
            warmup = getattr(self.landmarker, "warmup", None)
            if n > 1 and callable(warmup):  # OpenVINO compiles each new batch size once
                warmup(n * cfg.track.max_faces)
        elif self.injected:
            self._shared_landmarker = _Locked(self.landmarker)

    def for_stream(self, index: int, name: str) -> tuple[Any, Any, Any]:
        """``(detector, landmarker, denoiser)`` of stream ``index``."""
        detector = self._shared_detector or (
            self.detector if index == 0 else assembly.load_detector(self.cfg))
        if self.batcher is not None:
            landmarker: Any = self.batcher.client(name)
        elif self._shared_landmarker is not None:
            landmarker = self._shared_landmarker
        elif index == 0:
            landmarker = self.landmarker
        else:
            landmarker = assembly.load_landmarker(self.cfg)
            self._loaded.append(landmarker)
        den = self.denoiser
        if isinstance(den, TemporalDenoiser):  # its own feature buffer per stream
            den = TemporalDenoiser(den.config, den.weights, den.meta)
        elif den is not None:
            den = _Locked(den)
        return detector, landmarker, den

    def close(self) -> None:
        for lm in self._loaded:
            close = getattr(getattr(lm, "engine", None), "close", None)
            if callable(close):
                close()


class _Stream:
    """One source's pipeline, built and run on its own thread."""

    def __init__(self, name: str, cfg: Config, models: tuple[Any, Any, Any],
                 server: Any = None) -> None:
        self.name, self.cfg, self.server = name, cfg, server
        self.detector, self.landmarker, self.denoiser = models
        self.pipe: Pipeline | None = None
        self.report: StreamReport | None = None
        self._stopped: tuple[str, bool] | None = None
        self._lock = threading.Lock()
        self.thread = Worker(self._main, name=f"stream-{name}")

    @property
    def outputs(self) -> tuple[str, ...]:
        r = self.cfg.run
        return tuple(p for p in (r.out, r.jsonl, r.csv, f"vmc://{r.vmc}" if r.vmc else None)
                     if p)

    def stop(self, reason: str, drain: bool) -> None:
        with self._lock:
            self._stopped = (reason, drain)
            pipe = self.pipe
        if pipe is not None:
            pipe.stop(reason, drain=drain)

    def metrics(self) -> Metrics | None:
        return self.pipe.metrics() if self.pipe is not None else None

    def _main(self) -> None:
        spec = self.cfg.run.source or ""
        try:
            self.report = self._run(spec)
        except TrackerError as exc:
            self.report = StreamReport(self.name, spec, None, exc)  # nothing written
        except Exception as exc:  # noqa: BLE001 - a bug ends this stream, not the others
            error = PipelineError(f"{type(exc).__name__}: {exc}", "stream")
            error.__cause__ = exc
            self.report = StreamReport(self.name, spec, None, error)
        finally:
            if self.server is not None:
                self.server.end_stream(self.name, _end_reason(self.report))

    def _run(self, spec: str) -> StreamReport:
        cfg, r = self.cfg, self.cfg.run
        with ExitStack() as cleanup:
            video = assembly.open_video(cfg)
            cleanup.callback(video.close)
            ws = None
            if self.server is not None:
                from tracker.serve.sink import StreamSink

                self.server.describe_stream(self.name, assembly.source_meta(
                    video.info, cfg.pose, r.mirror))
                ws = StreamSink(self.server, self.name)
            vmc = cleanup.enter_context(closing(assembly.vmc_sink(r.vmc))) if r.vmc else None
            writer, jsonl, csv = assembly.file_outputs(cfg, video.info, cleanup)
            client = self.landmarker if isinstance(self.landmarker, BatchClient) else None
            detector = client.away(self.detector) if client is not None else self.detector
            track = assembly.track_stage(cfg, detector, self.landmarker, self.denoiser)
            stage: Stage = track
            if client is not None:  # frames bracketed for the batcher
                stage = BatchedTrack(track, client)
            latency = LatencySink()
            pipe = assembly.build_pipeline(
                cfg, video, video.info, downscaled(stage, video.info.width, video.info.height),
                writer=writer, jsonl=jsonl, csv=csv, vmc=vmc, ws=ws,
                smooth=assembly.smooth_stage(cfg),
                annotate=assembly.annotator(cfg), extra=latency, **assembly.describe_stages(cfg),
                one_thread=client is None)
            cleanup.pop_all()  # from here on every stage closes itself in its own thread
        with self._lock:
            self.pipe, stopped = pipe, self._stopped
        if stopped is not None:
            pipe.stop(stopped[0], drain=stopped[1])
        error: TrackerError | None = None
        try:
            metrics = pipe.run()
        except StageError as exc:
            metrics, error = pipe.metrics(), assembly.stage_failure(exc)
        status = "failed" if error is not None else (pipe.stop_reason or "finished")
        report = RunReport(info=video.info, metrics=metrics, stats=track.stats,
                           outputs=self.outputs, status=status,
                           interrupted=self._stopped is not None, warning=video.warning,
                           notes=tuple(video.notes))
        if error is None and not pipe.stop_reason:
            error = input_problem(video, metrics)
        return StreamReport(self.name, spec, report, error, self.outputs, *latency.percentiles())


def _end_reason(report: StreamReport | None) -> str:
    """The ``stream_end`` reason: never the error's text, which may name the source."""
    if report is None or report.error is not None:
        return "failed"
    if report.report is not None and report.report.interrupted:
        return "stopped"
    return "end of stream"


def _entries(cfg: Config, sources: Sequence[str | SourceEntry] | None) -> list[SourceEntry]:
    if sources:
        return [s if isinstance(s, SourceEntry) else SourceEntry(str(s)) for s in sources]
    if cfg.sources:
        return list(cfg.sources)
    if cfg.run.source:
        return [SourceEntry(cfg.run.source)]
    raise UsageError("no source: give the sources, or [[sources]] entries in the config")


def run_many(tracker: Tracker, sources: Sequence[str | SourceEntry] | None = None,
             outputs: Sequence[str] | None = None, *,
             on_start: Callable[[list[str]], None] | None = None,
             on_tick: Callable[[dict[str, Metrics]], None] | None = None,
             tick_s: float = 0.2,
             on_serve: Callable[[str], None] | None = None) -> MultiReport:
    """Track every source at once with ``tracker``'s configuration and models.

    ``sources``: specs (or :class:`~tracker.config.sources.SourceEntry` s with names); default:
    the config's ``[[sources]]``, else its ``run.source``. ``outputs`` as in
    :meth:`Tracker.run`, as templates (``landmarks_{stream}.jsonl``, ``{name}.mp4``), and
    ``ws://HOST:PORT``: one websocket server carrying every stream; no preview window or VMC
    with several sources. Outputs are checked, the models loaded and the websocket started
    (``on_serve`` gets its URL) before any source opens; then each stream runs on its own
    thread. ``on_start`` gets the stream names, ``on_tick`` every ``tick_s`` the metrics of
    the streams running so far. Ctrl-C stops every stream and finalises its outputs
    (``interrupted``).
    """
    cfg = with_outputs(tracker.config, outputs) if outputs is not None else tracker.config
    entries = _entries(cfg, sources)
    names = stream_names(entries)
    configs = stream_configs(cfg, entries, names)
    models = _Models(tracker, cfg, len(entries))
    server = None
    try:
        server = assembly.stream_server(cfg.stream, streams=names)
        if server is not None and on_serve is not None:
            on_serve(server.url)
        streams = [_Stream(name, c, models.for_stream(i, name), server)
                   for i, (name, c) in enumerate(zip(names, configs, strict=True))]
        started = time.perf_counter()
        for s in streams:
            s.thread.start()
        if on_start is not None:
            on_start(list(names))
        interrupted = _wait(streams, on_tick, tick_s)
    finally:
        if server is not None:
            server.close("end of stream")
        models.close()
    reports = tuple(s.report or StreamReport(s.name, s.cfg.run.source or "", None,
                                             PipelineError("the stream did not end", "stream"))
                    for s in streams)
    batching = models.batcher.stats if models.batcher is not None else None
    return MultiReport(reports, batching, time.perf_counter() - started, interrupted,
                       server.url if server is not None else None)


def _wait(streams: Sequence[_Stream], on_tick: Callable[[dict[str, Metrics]], None] | None,
          tick_s: float) -> bool:
    """Join the stream threads, ticking; True when Ctrl-C stopped them (a second Ctrl-C drops
    what is queued, a third stops waiting)."""
    interrupts = 0
    while True:
        try:
            alive = [s for s in streams if s.thread.running]
            if not alive:
                break
            alive[0].thread.wait(tick_s)
            if on_tick is not None:
                on_tick({s.name: m for s in streams if (m := s.metrics()) is not None})
        except KeyboardInterrupt:
            interrupts += 1
            for s in streams:
                s.stop("interrupted", drain=interrupts == 1)
            if interrupts >= 3:
                break
        except Exception:
            for s in streams:
                s.stop("on_tick failed", drain=False)
            for s in streams:
                s.thread.wait(5.0)
            raise
    return interrupts > 0
