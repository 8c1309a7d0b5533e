"""Video sources decoded with PyAV: files, webcams, network streams and lavfi test patterns.

Source specs understood by :func:`open_source`:

* a file path (``clip.mp4``), decoded with frame threading;
* ``webcam`` / ``webcam:N`` — camera N (v4l2 ``/dev/videoN`` on Linux, avfoundation on macOS);
  ``webcam:NAME`` gives a device by name (needed on Windows, where dshow is used);
* ``rtsp://``, ``rtmp://``, ``http(s)://``, ``udp://``, ``tcp://``, ``srt://`` URLs, opened with
  an open/read timeout;
* ``lavfi:GRAPH`` — an FFmpeg filter source, e.g. ``lavfi:testsrc2=size=320x240:rate=30``.

Opening happens in the caller's thread, so a bad source fails before any processing; decoding
happens in :meth:`VideoSource.items`, which the pipeline runs on the source stage's thread.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from tracker.errors import CameraNotFound, SourceError  # noqa: F401 (re-exported)
from tracker.io.integrity import mp4_problem, truncation  # noqa: F401 (re-exported)
from tracker.io.opening import frame_count, open_container, stream_fps
from tracker.io.orient import Orientation, frame_orientation, square_size
from tracker.io.specs import (  # noqa: F401 (re-exported: the names of tracker.io.source)
    _US_TIMEOUT_SCHEMES,
    HTTP_SCHEMES,
    LIVE_SCHEMES,
    SourceConfig,
    SourceInfo,
    SourceOptions,
    source_kind,
    webcam_device,
)
from tracker.io.timeline import MAX_GAP_S, Timeline, allows_resets, best_effort
from tracker.runtime.pipeline import Stage
from tracker.types import Frame

DEFAULT_OPTIONS = SourceOptions()
MAX_BAD_PACKETS = 50  # undecodable packets in a row before a source gives up
LOOKAHEAD = 3  # frames of a file decoded ahead to choose between pts and dts (BestEffort)


class VideoSource(Stage):
    """A decoding source stage; yields :class:`Frame` s with RGB images and container times.

    Frames are as displayed: turned by the stream's display matrix and stretched to square
    pixels (see :mod:`tracker.io.orient`), always ``info.width`` x ``info.height`` (a stream
    that changes size mid-way is resized back). Times always increase: a timestamp
    discontinuity (joined segments) shifts the later frames on, noted in :attr:`notes`.

    Damaged files are decoded as far as possible: undecodable packets are skipped and counted,
    and a file with read errors, bad packets or a container cut short is described in
    :attr:`damaged` (the run still processes everything that could be decoded); a frame count
    that differs from the header's is not damage. A live source that stalls or disconnects
    either ends the run cleanly (the reason goes to :attr:`warning`) or, with ``reconnect``,
    is reopened with exponential backoff.
    """

    name = "decode"
    nice = 5  # queue slack: yields the cores to the track stage (Stage.nice)

    def __init__(
        self,
        container: av.container.InputContainer,
        info: SourceInfo,
        options: SourceOptions = DEFAULT_OPTIONS,
        *,
        max_frames: int = 0,
        reopen: Callable[[], av.container.InputContainer] | None = None,
    ) -> None:
        """``max_frames``: stop after this many frames (0 = until the source ends)."""
        self.container = container
        self.stream = container.streams.video[0]
        self.info = info
        self.max_frames = max_frames
        self.options = options
        self._reopen = reopen
        self._stop = threading.Event()
        self._closed = False
        self.bad_packets = 0
        self.reconnects = 0
        self.damaged: str | None = None  # input truncated or corrupt (what decoded was used)
        self.warning: str | None = None  # why a live source ended early
        self.notes: list[str] = []  # oddities worked around (timestamp discontinuities)
        self._orient = Orientation()
        self._rgb = VideoReformatter()  # frames to RGB (swscale context kept between frames)
        self._size = (info.width, info.height)  # stored frames are scaled to this first
        # (container, first frame or None, the rest, or the error) decoded by prime()
        self._primed: tuple[object, list[av.VideoFrame], Iterator[av.VideoFrame],
                            BaseException | None] | None = None

    def prime(self) -> None:
        """Decode the first frame now: its display matrix and the pixel aspect ratio make
        ``info.width`` x ``info.height`` the displayed size. An error is raised by
        :meth:`frames` instead, where it would have happened anyway."""
        rest = self._decoded(self.container)
        try:
            head = [next(rest)]
        except StopIteration:
            head = []
        except (av.FFmpegError, OSError, SourceError) as exc:
            self._primed = (self.container, [], iter(()), exc)
            return
        self._primed = (self.container, head, rest, None)
        stored = (self.info.width, self.info.height)
        sar = self.stream.sample_aspect_ratio or self.stream.codec_context.sample_aspect_ratio
        self._size = square_size(*stored, sar)
        self._orient = frame_orientation(head[0]) if head else Orientation()
        width, height = self._orient.size(*self._size)
        self.info = replace(self.info, width=width, height=height, stored_size=stored,
                            rotation=self._orient.rotation, mirrored=self._orient.mirrored)

    def attach(self, stop: threading.Event) -> None:
        self._stop = stop

    def items(self) -> Iterator[Frame]:
        return self.frames()

    def frames(self) -> Iterator[Frame]:
        """Decode frames in order. ``time`` is ``pts * time_base`` in seconds (the dts where the
        pts are out of order, shifted on after a discontinuity); for live sources it is
        counted from the first frame. Raises :class:`SourceError` when nothing can be
        read; later problems end the stream (see the class docstring)."""
        return self._live_frames() if self.info.is_live else self._file_frames()

    def _frames_of(self, container: av.container.InputContainer) -> Iterator[av.VideoFrame]:
        """The decoded frames of ``container``, starting with those :meth:`prime` decoded."""
        primed, self._primed = self._primed, None
        if primed is None or primed[0] is not container:
            yield from self._decoded(container)
            return
        _, head, rest, error = primed
        if error is not None:
            raise error
        yield from head
        yield from rest

    def _clock(self, container: av.container.InputContainer) -> tuple[Timeline, int]:
        """``(timeline, ticks per frame)`` for the frames of ``container``."""
        tb = container.streams.video[0].time_base or Fraction(1, 90000)
        step = max(1, round(1 / (Fraction(self.info.fps or 30.0) * tb)))
        return Timeline(allows_resets(container), round(MAX_GAP_S / tb)), step

    def _note_jumps(self, timeline: Timeline, tb: Fraction | None) -> None:
        if timeline.first is None or tb is None:
            return
        at, jump = timeline.first
        n = timeline.jumps
        self.notes.append(
            f"{self.info.spec}: video timestamps jump {'back' if jump < 0 else 'ahead'} "
            f"{abs(float(jump * tb)):.3g} s at {float(at * tb):.3f} s ({n} discontinuit"
            f"{'y' if n == 1 else 'ies'}, e.g. joined segments); the frames after each were "
            "shifted to follow on, so every frame is kept")

    def _decoded(self, container: av.container.InputContainer) -> Iterator[av.VideoFrame]:
        """Frames of the first video stream; single undecodable packets are skipped."""
        stream = container.streams.video[0]
        in_a_row = 0
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.ExitError:
                raise
            except (av.FFmpegError, ValueError) as exc:
                self.bad_packets += 1
                in_a_row += 1
                if in_a_row >= MAX_BAD_PACKETS:
                    raise SourceError(f"{in_a_row} undecodable packets in a row ({exc})") \
                        from None
                continue
            in_a_row = 0
            yield from frames

    def _image(self, frame: av.VideoFrame) -> np.ndarray:
        """The frame as displayed, in RGB (scaled to square pixels, then turned)."""
        w, h = self._size
        size: dict[str, object] = {}
        if (frame.width, frame.height) != (w, h):
            shrink = frame.width * frame.height > w * h
            size = dict(width=w, height=h, interpolation="AREA" if shrink else "BICUBIC")
        try:
            # one reformatter for the stream: frame.to_ndarray(format=...) sets up a new
            # SwsContext for every frame (~0.03-0.05 ms at 640x360); the same pixels
            image = self._rgb.reformat(frame, format="rgb24", **size).to_ndarray()
        except (av.FFmpegError, ValueError) as exc:
            raise SourceError(
                f"{self.info.spec}: cannot convert pixel format {frame.format.name} to RGB "
                f"({exc}); convert the video, e.g. to H.264 yuv420p"
            ) from None
        return self._orient.apply(image)

    def _file_frames(self) -> Iterator[Frame]:
        tb = self.stream.time_base
        fps = self.info.fps or 30.0
        timeline, step = self._clock(self.container)
        index = 0
        try:
            for frame, pts in best_effort(self._frames_of(self.container), LOOKAHEAD):
                if self.max_frames and index >= self.max_frames:
                    return
                t = index / fps if pts is None or tb is None else \
                    float(timeline.place(pts, step) * tb)
                yield Frame(index=index, time=t, image=self._image(frame), wall_time=time.time())
                index += 1
        except av.error.ExitError:
            raise SourceError(
                f"{self.info.spec}: no data for {self.options.read_timeout_s:g} s; stream stalled"
            ) from None
        except (av.FFmpegError, OSError, SourceError) as exc:
            if index == 0:
                raise SourceError(f"{self.info.spec}: decoding failed: {exc}") from None
            self._note_damage(index, f"read error: {exc}")
            return
        finally:
            self._note_jumps(timeline, tb)
        self._note_damage(index, None)

    def _note_damage(self, decoded: int, reason: str | None) -> None:
        """Set :attr:`damaged` when there is evidence: a read error, undecodable packets or a
        container cut short (the header's frame count alone is none)."""
        cut = truncation(self.info.path) if self.info.path else None
        if not (reason or cut or self.bad_packets):
            return
        expected = (self.stream.frames or self.info.frame_count or 0) if self.info.kind == "file" \
            else 0
        parts = [f"decoded {decoded} of {expected} frames" if expected > decoded else
                 f"decoded {decoded} frames"]
        if self.bad_packets:
            parts.append(f"{self.bad_packets} undecodable packets skipped")
        parts += [r for r in (reason, cut) if r]
        self.damaged = (f"{self.info.spec} is truncated or damaged ({'; '.join(parts)}); "
                        "the outputs hold every frame that could be decoded")

    def _live_frames(self) -> Iterator[Frame]:
        opts = self.options
        fps = self.info.fps or 30.0
        stalled = f"no data for {opts.read_timeout_s:g} s (stream stalled)"
        index, failures = 0, 0
        offset, last_t, last_wall = 0.0, 0.0, 0.0
        container: av.container.InputContainer | None = self.container
        while container is not None:
            tb = container.streams.video[0].time_base
            timeline, step = self._clock(container)
            first: int | None = None
            ended = False
            heard = time.time()  # when the source last gave a frame
            try:
                for frame, pts in best_effort(self._frames_of(container)):
                    if self.max_frames and index >= self.max_frames:
                        return
                    wall = time.time()
                    if pts is None or tb is None:
                        t = offset + index / fps
                    else:
                        placed = timeline.place(pts, step)
                        first = placed if first is None else first
                        t = offset + float((placed - first) * tb)
                    yield Frame(index=index, time=t, image=self._image(frame), wall_time=wall)
                    index, failures, last_t, last_wall = index + 1, 0, t, wall
                    heard = time.time()
                ended = True
                reason = ("the stream ended early (the server closed the connection)"
                          if self.info.kind == "url" else "the source stopped sending frames")
            except av.error.ExitError:
                reason = stalled
            except (av.FFmpegError, OSError, SourceError) as exc:
                # some demuxers (RTSP) report a read cut off by the timeout as bad data
                late = time.time() - heard >= opts.read_timeout_s
                reason = stalled if late else f"stream error: {exc}"
            finally:
                self._note_jumps(timeline, tb)
            if not opts.reconnect or self._reopen is None:
                if index == 0 and not ended:
                    raise SourceError(f"{self.info.spec}: {reason}")
                self.warning = f"{self.info.spec}: {reason}; the run ended there"
                return
            container, failures = self._reconnect(reason, failures)
            if index:
                offset = last_t + max(1.0 / fps, time.time() - last_wall)

    def _reconnect(
        self, reason: str, failures: int
    ) -> tuple[av.container.InputContainer | None, int]:
        """Reopen with exponential backoff: ``(container or None when giving up or stopping,
        failed attempts in a row so far)``."""
        opts = self.options
        self._close_container()
        delay = opts.reconnect_backoff_s
        while not (opts.reconnect_attempts and failures >= opts.reconnect_attempts):
            if self._stop.wait(delay):
                return None, failures
            failures += 1
            try:
                assert self._reopen is not None
                container = self._reopen()
            except SourceError as exc:
                reason = str(exc)
                delay = min(2.0 * delay, opts.reconnect_backoff_max_s)
                continue
            if not container.streams.video:
                container.close()
                reason = "no video stream after reconnecting"
                continue
            self.container, self.stream = container, container.streams.video[0]
            self.reconnects += 1
            return container, failures
        self.warning = (f"{self.info.spec}: {reason}; gave up after {failures} reconnect "
                        "attempts")
        return None, failures

    def _close_container(self) -> None:
        try:
            self.container.close()
        except (av.FFmpegError, OSError):
            pass

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close_container()


def open_source(spec: str, options: SourceOptions = DEFAULT_OPTIONS, *,
                max_frames: int = 0) -> VideoSource:
    """Open ``spec`` (see module docstring) and return a source stage that stops after
    ``max_frames`` frames (0 = at the end); raises SourceError."""
    spec = spec.strip()
    if not spec:
        raise SourceError("empty source")
    kind = source_kind(spec)

    def reopen() -> av.container.InputContainer:
        again = open_container(spec, kind, options)
        if again.streams.video and again.streams.video[0].codec_context is not None:
            again.streams.video[0].thread_type = "AUTO"
        return again

    container = open_container(spec, kind, options)
    try:
        if not container.streams.video:
            raise SourceError(f"no video stream in {spec}")
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise SourceError(
                f"unsupported video codec in {spec} (no decoder for it in this FFmpeg build); "
                "convert it, e.g. ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4"
            )
        stream.thread_type = "AUTO"
        fps = stream_fps(stream)
        scheme = spec.split("://", 1)[0].lower() if kind == "url" else ""
        is_live = kind == "webcam" or scheme in LIVE_SCHEMES or (
            scheme in HTTP_SCHEMES and container.duration is None
        )
        count = None if is_live else frame_count(container, stream, fps)
        if max_frames:
            count = max_frames if count is None else min(count, max_frames)
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            raise SourceError(f"video stream of {spec} has no frame size")
        info = SourceInfo(
            spec=spec,
            kind=kind,
            width=int(width),
            height=int(height),
            fps=fps if math.isfinite(fps) else 0.0,
            time_base=Fraction(stream.time_base) if stream.time_base else Fraction(1, 90000),
            is_live=is_live,
            path=spec if kind == "file" else None,
            frame_count=count,
            has_audio=bool(container.streams.audio),
        )
        source = VideoSource(container, info, options, max_frames=max_frames, reopen=reopen)
        source.prime()
    except BaseException:
        container.close()
        raise
    return source

