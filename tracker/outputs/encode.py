"""Output sinks for annotated frames: an H.264 MP4 writer with audio pass-through, and a preview.

``VideoWriter`` keeps the input's timing: each frame's pts is ``round(time / time_base)`` with
the source's time base, so frame count, timestamps and duration match the input. The source's
audio is interleaved with the video as it is written: remuxed untouched when the output can
carry its codec, else re-encoded to AAC (see :mod:`tracker.outputs.audio`).

MP4/MOV files are written fragmented (``moov`` first, then a ``moof``+``mdat`` pair per
:data:`FRAGMENT_S` of video, an ``mfra`` seek index at the end) and append-only, and only whole
fragments reach the disk: a killed process (SIGKILL) or a disk that fills up leaves a playable
file holding every fragment completed before, and after a power loss every fragment synced
(:data:`SYNC_S`).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time as _time
from collections.abc import Sequence
from contextlib import ExitStack
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import cv2
import numpy as np

from tracker.errors import EncodeError, PreviewUnavailable  # noqa: F401 (re-exported)
from tracker.io.integrity import mp4_problem
from tracker.io.opening import video_time_base
from tracker.outputs.audio import AudioFeed
from tracker.outputs.fragments import SYNC_S, FragmentFile  # noqa: F401 (SYNC_S re-exported)
from tracker.outputs.fragments import FragmentFile as _FragmentFile  # noqa: F401 (old name)
from tracker.outputs.render import draw_hud
from tracker.outputs.yuv import I420Converter

X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
)

log = logging.getLogger(__name__)

DEFAULT_TIME_BASE = Fraction(1, 90000)
# superfast, not veryfast: at crf 20 on the 640x360 clip it costs ~2.6-3.0 ms CPU a frame against
# ~3.6-4.5 ms (about 1.2 ms of the ~9 ms the whole `tracker run --out` pipeline spends a frame on
# 2 cores), for a file ~1.6x larger (1.28 vs 0.81 MB); python benchmarks/encode_bench.py.
DEFAULT_PRESET = "superfast"
DEFAULT_CRF = 20  # x264 constant rate factor (0-51, lower = better and bigger)
_MOV_MUXERS = frozenset({"mp4", "mov", "ipod", "3gp", "3g2", "psp", "ismv", "f4v"})
# written fragmented (ismv and f4v keep FFmpeg's own layout for those formats)
_FRAGMENTED_MUXERS = _MOV_MUXERS - {"ismv", "f4v"}
# Seconds of video per MP4 fragment: what a kill can lose (plus the encoder's few frames of
# delay). Each fragment costs a ~250-600 byte header, about what the moov index shrinks by:
# the 10 s test clip is 1 275 711 bytes against 1 277 071 unfragmented.
FRAGMENT_S = 0.5
# delay_moov, not empty_moov: the moov is written with the first fragment, once the first
# timestamps are known, so start offsets (edit lists) stay exact as in an unfragmented file.
_MOVFLAGS = "frag_keyframe+delay_moov+default_base_moof"


def _reason(exc: BaseException) -> str:
    """An OS or FFmpeg error as words, without the errno ("No space left on device")."""
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class VideoWriter:
    """Encode RGB frames to H.264 (yuv420p) in an MP4, keeping input timestamps and audio.

    Frames reach libx264 as yuv420p (:mod:`tracker.outputs.yuv`); it runs frame threads
    (``threads``: 0 = x264's own count) at the given preset and CRF.

    ``time`` passed to :meth:`write` must be the container time of the source frame
    (``pts * time_base``, as in ``Frame.time``, not shifted to start at zero) so that the
    remuxed audio stays in sync. ``time_base`` is the source video stream's time base; when
    omitted it is read from ``audio_source``'s video stream, else 1/90000.

    Odd widths or heights are padded by one replicated row/column to the next even size
    (yuv420p needs even dimensions); ``width``/``height`` give the encoded size.
    Frames whose pts would not increase are nudged to ``last + 1`` (counted in ``adjusted``).
    Audio is written up to the end of the last video frame, its timestamps made to increase
    as the source's video times are (see :class:`~tracker.io.timeline.Timeline`); audio that
    can be neither copied nor re-encoded is dropped with a warning. ``close()`` is idempotent
    and always finalises the file, also after an exception or KeyboardInterrupt, and raises
    :class:`EncodeError` if the MP4 came out without its index. Thread-safe: write and close
    may be called from different threads.

    MP4/MOV output is fragmented (see the module docstring); ``sync`` fdatasyncs it at most
    every :data:`SYNC_S` seconds and at close, bounding what a power loss takes. A write that fails
    (disk full) raises :class:`EncodeError` with the OS reason; the file then keeps every
    whole fragment, and ``close()`` only releases resources.
    """

    def __init__(
        self,
        path: str,
        width: int,
        height: int,
        fps: float,
        audio_source: str | None = None,
        time_base: Fraction | None = None,
        *,
        preset: str = DEFAULT_PRESET,
        crf: int = DEFAULT_CRF,
        threads: int = 0,
        sync: bool = True,
    ) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"frame size must be positive, got {width}x{height}")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if preset not in X264_PRESETS:
            raise ValueError(f"unknown x264 preset {preset!r}; one of {', '.join(X264_PRESETS)}")
        self.path = path
        self.source_size = (int(width), int(height))
        self.width = int(width) + (int(width) & 1)
        self.height = int(height) + (int(height) & 1)
        self.fps = float(fps)
        tb = time_base
        if tb is None and audio_source is not None:
            tb = video_time_base(audio_source)
        self.time_base = Fraction(tb) if tb is not None else DEFAULT_TIME_BASE
        self.frame_ticks = max(1, round(1 / (Fraction(self.fps) * self.time_base)))
        self.frames_written = 0
        self.adjusted = 0
        self._last_pts: int | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._audio: AudioFeed | None = None
        self._file: FragmentFile | None = None
        self._failed = False
        self._to_i420 = I420Converter(self.width, self.height)  # RGB -> yuv420p, one buffer

        parent = os.path.dirname(os.path.abspath(path))
        if not (os.path.isdir(parent) and os.access(parent, os.W_OK)):
            raise EncodeError(f"cannot write {path!r}: {parent} is not a writable directory")
        self._container = self._open(path, sync)
        try:
            self._video = self._add_video(preset, crf, threads)
            if audio_source is not None:
                self._add_audio(audio_source)
            self._set_mov_options()
            if self._file is not None:
                self._open_file()
        except BaseException:
            self._closed = True
            self._container.close()
            if self._file is not None:
                self._file.close()
            if self._audio is not None:
                self._audio.close()
            raise

    def _open(self, path: str, sync: bool) -> av.container.OutputContainer:
        """The output container; MP4/MOV go through a :class:`FragmentFile`."""
        try:
            self._file = FragmentFile(path, sync=sync)
            container = av.open(self._file, "w")  # creates nothing (opened once set up)
            if container.format.name in _FRAGMENTED_MUXERS:
                return container
            container.close()  # another format: FFmpeg's own file I/O, nothing written yet
            self._file.close()
            self._file = None
            return av.open(path, "w")
        except (av.FFmpegError, OSError, ValueError) as exc:
            if self._file is not None:
                self._file.close()
                self._file = None
            raise EncodeError(f"cannot open {path!r} for writing: {_reason(exc)}") from None

    def _open_file(self) -> None:
        assert self._file is not None
        try:
            self._file.open()
        except OSError as exc:
            raise EncodeError(f"cannot open {self.path!r} for writing: {_reason(exc)}") from None

    def _add_video(self, preset: str, crf: int, threads: int) -> av.video.stream.VideoStream:
        rate = Fraction(self.fps).limit_denominator(1001 * 1000)
        stream = self._container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base
        stream.codec_context.thread_count = threads
        stream.codec_context.thread_type = "FRAME"  # PyAV's default: a slice per thread
        stream.options = {"preset": preset, "crf": str(crf)}
        return stream

    def _add_audio(self, audio_source: str) -> None:
        try:
            self._audio = AudioFeed(audio_source, self._container, self.path,
                                    mp4=self._container.format.name in _MOV_MUXERS)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise EncodeError(f"cannot read audio from {audio_source!r}: {_reason(exc)}") from None
        if self._audio.stream is None:
            self._audio.close()
            self._audio = None

    @property
    def audio_packets_written(self) -> int:
        return self._audio.packets_written if self._audio is not None else 0

    def _set_mov_options(self) -> None:
        """Fragment MP4/MOV output (see the module docstring) and keep start offsets exact.

        Each stream's start offset is stored as an edit list in the movie timescale (default
        1/1000 s, rounded down), which would shift all pts of a stream by up to a millisecond;
        a common multiple of the stream time-base denominators keeps them exact.
        """
        if self._container.format.name not in _MOV_MUXERS:
            return
        if self._file is not None:
            self._container.options["movflags"] = _MOVFLAGS
            self._container.options["frag_duration"] = str(round(FRAGMENT_S * 1e6))
        scale = self.time_base.denominator
        if self._audio is not None and self._audio.stream is not None:
            scale = math.lcm(scale, Fraction(self._audio.stream.time_base).denominator)
        if scale > 2**31 - 1:
            scale = self.time_base.denominator
        self._container.options["movie_timescale"] = str(scale)

    def _mux_audio_until(self, limit: Fraction, *, inclusive: bool) -> None:
        """Mux source audio packets that start before ``limit`` seconds (or at it)."""
        if self._audio is not None:
            self._audio.mux_until(self._container, limit, inclusive=inclusive)

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        w, h = self.source_size
        if image.dtype != np.uint8 or image.shape != (h, w, 3):
            raise ValueError(
                f"expected a uint8 ({h}, {w}, 3) RGB image, got {image.dtype} {image.shape}"
            )
        if (self.width, self.height) != (w, h):
            return cv2.copyMakeBorder(
                image, 0, self.height - h, 0, self.width - w, cv2.BORDER_REPLICATE
            )
        return np.ascontiguousarray(image)

    def write(self, image_rgb: np.ndarray, time: float) -> None:
        """Encode one RGB frame shown at ``time`` seconds (source container time)."""
        with self._lock:
            if self._closed:
                raise EncodeError(f"write to closed VideoWriter ({self.path})")
            if self._failed:
                raise self._failure(None)
            frame = av.VideoFrame.from_ndarray(self._to_i420(self._prepare(image_rgb)), "yuv420p")
            pts = round(Fraction(time) / self.time_base)
            if self._last_pts is not None and pts <= self._last_pts:
                pts = self._last_pts + 1
                self.adjusted += 1
            frame.pts, frame.time_base, frame.duration = pts, self.time_base, self.frame_ticks
            try:
                self._mux_audio_until(pts * self.time_base, inclusive=True)
                for packet in self._video.encode(frame):
                    self._container.mux(packet)
            except (OSError, av.FFmpegError) as exc:
                raise self._failure(exc) from None
            self._last_pts = pts
            self.frames_written += 1

    def _failure(self, exc: BaseException | None) -> EncodeError:
        """The error of a failed write (the file's own OS error when it has one)."""
        self._failed = True
        if self._file is not None and self._file.error is not None:
            exc = self._file.error
        reason = _reason(exc) if exc is not None else "an earlier write failed"
        return EncodeError(f"cannot write {self.path}: {reason}")

    def close(self) -> None:
        """Flush the encoder, write the audio up to the video's end and finalise the file.

        After a failed write it only releases resources (the error was raised by ``write``).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            failed = self._failed
            try:
                self._finish()
            except (OSError, av.FFmpegError) as exc:
                if not failed:
                    raise self._failure(exc) from None
            if self._file is not None and self.frames_written and not failed and \
                    mp4_problem(Path(self.path)):  # a muxer that failed without saying so
                raise EncodeError(f"cannot write {self.path}: the MP4 muxer wrote no index")

    def _finish(self) -> None:
        with ExitStack() as cleanup:  # every step runs even if an earlier one raised
            if self._file is not None:
                cleanup.callback(self._file.close)  # last: after the trailer
            if self._audio is not None:
                cleanup.callback(self._audio.close)
            cleanup.callback(self._container.close)
            if self._failed:
                return
            if self.frames_written == 0:
                cleanup.callback(self._container.start_encoding)  # a valid, empty file
                return
            try:
                for packet in self._video.encode(None):
                    self._container.mux(packet)
            finally:
                end = (self._last_pts + self.frame_ticks) * self.time_base
                self._mux_audio_until(end, inclusive=False)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


_NO_GUI_BUILD = (
    "--show needs a GUI build of OpenCV: "
    "pip uninstall opencv-python-headless && pip install opencv-python"
)
_NO_DISPLAY = "--show needs a display (DISPLAY / WAYLAND_DISPLAY is not set)"


def preview_problem() -> str | None:
    """Why an OpenCV window cannot open here (one line), or None if it should.

    Cheap and window-free, so a CLI can check ``--show`` before starting any work.
    """
    lines = cv2.getBuildInformation().splitlines()
    gui = next((ln.split(":", 1)[1].strip() for ln in lines if ln.strip().startswith("GUI:")), "")
    if gui.upper() == "NONE":
        return _NO_GUI_BUILD
    on_linux = sys.platform.startswith("linux")
    if on_linux and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return _NO_DISPLAY  # checked first: Qt builds abort the process without a display
    return None


class Preview:
    """An OpenCV window showing frames with fps and latency in a corner; q or Esc stops."""

    def __init__(self, title: str = "tracker") -> None:
        problem = preview_problem()
        if problem is not None:
            raise PreviewUnavailable(problem)
        try:
            cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE)
        except cv2.error:
            raise PreviewUnavailable(_NO_GUI_BUILD) from None
        self.title = title
        self.stopped = False
        self.fps = 0.0
        self._last_show: float | None = None

    def show(
        self, image_rgb: np.ndarray, latency_ms: float | None = None, lines: Sequence[str] = ()
    ) -> bool:
        """Display one RGB frame; returns False once the user asked to stop."""
        now = _time.perf_counter()
        if self._last_show is not None and now > self._last_show:
            rate = 1.0 / (now - self._last_show)
            self.fps = rate if self.fps == 0.0 else 0.9 * self.fps + 0.1 * rate
        self._last_show = now
        bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
        hud = [f"{self.fps:5.1f} fps"]
        if latency_ms is not None:
            hud.append(f"latency {latency_ms:4.0f} ms")
        draw_hud(bgr, [*hud, *lines])
        cv2.imshow(self.title, bgr)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            self.stopped = True
        elif cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            self.stopped = True  # window closed with the mouse
        return not self.stopped

    def close(self) -> None:
        """Close the window (safe to call twice)."""
        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
        except cv2.error:
            pass

    def __enter__(self) -> Preview:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
