"""Output stages: landmarks as JSON lines or CSV rows, annotated frames to a video file and a
preview window.

Files are opened when a sink is constructed (in the caller's thread, so a bad path fails before
processing starts) and finalised in :meth:`close`, which the pipeline always calls.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from tracker.errors import OutputError
from tracker.outputs.record import CSV_COLUMNS, csv_rows, frame_record
from tracker.runtime.pipeline import Stage, StopRequested
from tracker.types import Frame, TrackedFrame


class LineSink(Stage):
    """Writes whole lines to a file or stdout (``path`` '-').

    Each line goes out in one unbuffered write, so the file always ends on a complete line:
    when a write fails (disk full) the file is cut back to the last complete line and
    :class:`~tracker.errors.OutputError` is raised with the OS reason. On stdout a reader that
    goes away (``| head``) stops the run cleanly instead.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.lines = 0
        self._size = 0  # bytes of complete lines in the file
        self._file = None if path == "-" else open(path, "wb", buffering=0)  # noqa: SIM115
        self._closed = False

    def write_line(self, line: str) -> None:
        """One complete line (ending in a newline)."""
        if self._file is None:
            self._to_stdout(line)
        else:
            self._to_file(line.encode("utf-8"))
        self.lines += 1

    def _to_file(self, data: bytes) -> None:
        assert self._file is not None
        try:
            done = 0
            while done < len(data):  # a short write (the disk filling up) then raises
                done += self._file.write(data[done:]) or 0
        except OSError as exc:
            try:
                self._file.truncate(self._size)
                self._file.seek(self._size)
            except OSError:
                pass
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self._size += len(data)

    def _to_stdout(self, line: str) -> None:
        try:
            sys.stdout.write(line)
            sys.stdout.flush()
        except OSError as exc:
            _stdout_to_devnull()  # what is left in its buffer cannot be written either
            if _closed_pipe(exc):
                raise StopRequested("stdout closed") from None
            raise OutputError(f"cannot write to stdout: {exc.strerror or exc}") from None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._file is not None:
            self._file.close()
            return
        try:
            sys.stdout.flush()
        except OSError as exc:
            _stdout_to_devnull()
            if not _closed_pipe(exc):
                raise OutputError(f"cannot write to stdout: {exc.strerror or exc}") from None


class JsonlSink(LineSink):
    """One JSON line per tracked frame (:func:`~tracker.outputs.record.frame_record`)."""

    name = "jsonl"

    def write(self, item: TrackedFrame, file: str | None = None) -> None:
        """The frame's line; ``file`` names a still image."""
        rec = frame_record(item, file)
        self.write_line(json.dumps(rec, separators=(",", ":"), allow_nan=False) + "\n")

    def process(self, item: TrackedFrame) -> None:
        self.write(item)


class CsvSink(LineSink):
    """One CSV row per face per frame (:data:`~tracker.outputs.record.CSV_COLUMNS`, written
    first as the header), each row one whole line."""

    name = "csv"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.write_line(_csv_line(list(CSV_COLUMNS)))

    def write(self, item: TrackedFrame, file: str | None = None) -> None:
        """The frame's rows; ``file`` names a still image."""
        for row in csv_rows(item, file):
            self.write_line(_csv_line(row))

    def process(self, item: TrackedFrame) -> None:
        self.write(item)


def _csv_line(cells: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(cells)
    return buf.getvalue()


def _closed_pipe(exc: OSError) -> bool:
    return isinstance(exc, BrokenPipeError) or exc.errno == errno.EPIPE


def _stdout_to_devnull() -> None:
    """Point file descriptor 1 at /dev/null so nothing fails flushing stdout at exit
    (what the Python docs advise after a ``BrokenPipeError``)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by an object without a descriptor
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


class RenderStage(Stage):
    """Draws landmarks on each frame; outputs a :class:`Frame` holding the annotated image.

    With ``inplace`` (the render stage is the only reader of the frames' images; ``annotate``
    takes ``inplace=``, as :func:`~tracker.outputs.render.annotate`) a C-contiguous writable
    image is drawn on itself instead of on a copy.
    """

    name = "render"
    nice = 10  # queue slack: yields the cores to the track stage (Stage.nice)

    def __init__(self, annotate: Callable[..., np.ndarray], *, inplace: bool = False) -> None:
        self._annotate = annotate
        self._inplace = inplace

    def process(self, item: TrackedFrame) -> Frame:
        f = item.frame
        image = f.image
        if self._inplace and image.flags.c_contiguous and image.flags.writeable:
            drawn = self._annotate(image, item, inplace=True)
        else:
            drawn = self._annotate(image, item)
        return Frame(f.index, f.time, drawn, f.wall_time)


class Writer(Protocol):
    def write(self, image_rgb: np.ndarray, time: float) -> None: ...
    def close(self) -> None: ...


class VideoSink(Stage):
    """Encodes frames with a writer such as ``tracker.outputs.encode.VideoWriter``; closes it at the end."""

    name = "video"
    nice = 10  # queue slack: yields the cores to the track stage (Stage.nice)

    def __init__(self, writer: Writer) -> None:
        self.writer = writer

    def process(self, item: Frame) -> None:
        self.writer.write(item.image, item.time)

    def close(self) -> None:
        self.writer.close()


class PreviewSink(Stage):
    """Shows frames in a window; the user closing it (q/Esc) stops the pipeline.

    The window is made by ``factory`` in the sink's own thread (GUI toolkits want every call
    for a window on one thread).
    """

    name = "preview"

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._preview: Any = None

    def open(self) -> None:
        self._preview = self._factory()

    def process(self, item: Frame) -> None:
        latency_ms = (time.time() - item.wall_time) * 1e3 if item.wall_time else None
        if not self._preview.show(item.image, latency_ms):
            raise StopRequested("preview closed")

    def close(self) -> None:
        if self._preview is not None:
            self._preview.close()
