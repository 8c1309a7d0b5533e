"""Output stages: landmarks as JSON lines, annotated frames to a video file and a preview window.

Files are opened when a sink is constructed (in the caller's thread, so a bad path fails before
processing starts) and finalised in :meth:`close`, which the pipeline always calls.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import IO, Any, Protocol

import numpy as np

from tracker.outputs.record import frame_record
from tracker.runtime.pipeline import Stage, StopRequested
from tracker.types import Frame, TrackedFrame


class JsonlSink(Stage):
    """Writes one JSON line per tracked frame (:func:`~tracker.outputs.record.frame_record`),
    flushed, always ending on a complete line."""

    name = "jsonl"

    def __init__(self, path: str) -> None:
        self.path = path
        self.lines = 0
        self._file: IO[str]
        if path == "-":
            self._file = sys.stdout
        else:
            self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._closed = False

    def process(self, item: TrackedFrame) -> None:
        line = json.dumps(frame_record(item), separators=(",", ":"), allow_nan=False) + "\n"
        self._file.write(line)  # one write of a whole line
        self._file.flush()
        self.lines += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._file is sys.stdout:
            self._file.flush()
        else:
            self._file.close()


class RenderStage(Stage):
    """Draws landmarks on each frame; outputs a :class:`Frame` holding the annotated image."""

    name = "render"

    def __init__(self, annotate: Callable[[np.ndarray, TrackedFrame], np.ndarray]) -> None:
        self._annotate = annotate

    def process(self, item: TrackedFrame) -> Frame:
        f = item.frame
        return Frame(f.index, f.time, self._annotate(f.image, item), f.wall_time)


class Writer(Protocol):
    def write(self, image_rgb: np.ndarray, time: float) -> None: ...
    def close(self) -> None: ...


class VideoSink(Stage):
    """Encodes frames with a writer such as ``tracker.outputs.encode.VideoWriter``; closes it at the end."""

    name = "video"

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
