"""One landmark model shared by many streams: the faces of every stream go into one call.

Each stream's track stage gets a :class:`BatchClient`, which looks like a landmarker. A
client's ``predict`` queues a request and waits; a batch runs when every stream that is in the
middle of a frame (:meth:`BatchClient.begin` .. :meth:`BatchClient.end`, which
:class:`BatchedTrack` calls around each frame, less the face detector's calls:
:meth:`BatchClient.away`) has a request in, or when the oldest queued request has waited
``wait_s``, whichever comes first. Streams waiting for their next frame are not waited for,
so a slow, stalled or ended stream delays the others by at most ``wait_s`` a call. The
thread of the oldest request runs the batch through the model's ``predict_many`` (one engine
call over all crops; the engine's batch plan decides how it runs), then hands each caller its
predictions; requests that arrive meanwhile form the next batch. A batch that fails is
retried one request at a time, so a bad request fails only its own stream.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tracker.runtime.pipeline import Stage
from tracker.tracking.face_tracker import accepts_angles
from tracker.types import Box, Frame, TrackedFrame

WAIT_S = 0.002  # longest wait for the other streams' requests
_MAX_SAMPLES = 20_000


@dataclass(frozen=True, slots=True)
class BatchStats:
    """What a :class:`SharedLandmarker` did: batches, how full they were, how long requests
    waited for their batch to start (ms)."""

    calls: int = 0  # batches run (model calls)
    requests: int = 0  # predict calls served
    faces: int = 0
    streams_per_call: float = 0.0  # mean distinct streams in a batch
    max_faces: int = 0  # the largest batch, in faces
    full: int = 0  # batches that ran because every stream mid-frame had a request in
    wait_p50_ms: float = 0.0
    wait_p99_ms: float = 0.0

    @property
    def faces_per_call(self) -> float:
        return self.faces / self.calls if self.calls else 0.0


class _Request:
    __slots__ = ("client", "image", "boxes", "angles", "t", "result", "error", "done")

    def __init__(self, client: BatchClient, image: np.ndarray, boxes: Sequence[Box],
                 angles: Sequence[float] | None) -> None:
        self.client, self.image, self.boxes, self.angles = client, image, boxes, angles
        self.t = time.perf_counter()
        self.result: list[Any] = []
        self.error: BaseException | None = None
        self.done = False


def _run_requests(model: Any, requests: Sequence[_Request]) -> list[list[Any]]:
    """The predictions of each request: one ``predict_many`` call, or ``predict`` per request
    for models without it."""
    many = getattr(model, "predict_many", None)
    if many is not None:
        return [list(r) for r in many([(r.image, r.boxes, r.angles) for r in requests])]
    if accepts_angles(model):
        return [list(model.predict(r.image, r.boxes, r.angles)) for r in requests]
    return [list(model.predict(r.image, r.boxes)) for r in requests]


class SharedLandmarker:
    """Gathers the requests of many :class:`BatchClient` s into batched model calls (see the
    module docstring). ``model`` is used by one thread at a time."""

    def __init__(self, model: Any, wait_s: float = WAIT_S) -> None:
        self.model = model
        self.wait_s = max(0.0, wait_s)
        self._cond = threading.Condition()
        self._pending: list[_Request] = []
        self._busy = False  # a batch is running
        self._in_frame: set[BatchClient] = set()
        self._calls = self._requests = self._faces = self._streams = self._max = 0
        self._full = 0
        self._waits: list[float] = []

    def client(self, name: str) -> BatchClient:
        """A landmarker for one stream's track stage."""
        return BatchClient(self, name)

    @property
    def stats(self) -> BatchStats:
        with self._cond:
            waits = np.asarray(self._waits, np.float64)
            p50, p99 = np.percentile(waits, [50, 99]) if waits.size else (0.0, 0.0)
            spc = self._streams / self._calls if self._calls else 0.0
            return BatchStats(self._calls, self._requests, self._faces, spc, self._max,
                              self._full, float(p50), float(p99))

    # -- called by the clients (under no lock) ------------------------------------------------

    def _mark(self, client: BatchClient, busy: bool) -> None:
        with self._cond:
            if busy:
                self._in_frame.add(client)
            else:
                self._in_frame.discard(client)
            self._cond.notify_all()  # a batch waiting for this stream need not wait any more

    def _submit(self, request: _Request) -> list[Any]:
        with self._cond:
            self._pending.append(request)
            self._cond.notify_all()
            while not request.done:
                if self._busy or not self._pending or self._pending[0] is not request:
                    self._cond.wait(0.05)
                    continue
                # this thread leads the next batch: wait for the streams mid-frame, or wait_s
                deadline = request.t + self.wait_s
                full = self._full_now()
                while not full and not self._busy:
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                    full = self._full_now()
                if self._busy:
                    continue
                batch, self._pending = self._pending, []
                self._busy = True
                self._note(batch, full)
                self._cond.release()
                try:
                    self._run(batch)
                finally:
                    self._cond.acquire()
                    self._busy = False
                    self._cond.notify_all()
        if request.error is not None:
            raise request.error
        return request.result

    def _full_now(self) -> bool:
        """Every stream mid-frame has a request queued (called under the lock)."""
        waiting = {r.client for r in self._pending}
        return self._in_frame <= waiting

    def _note(self, batch: list[_Request], full: bool) -> None:
        now = time.perf_counter()
        self._calls += 1
        self._requests += len(batch)
        faces = sum(len(r.boxes) for r in batch)
        self._faces += faces
        self._max = max(self._max, faces)
        self._streams += len({r.client for r in batch})
        self._full += int(full)
        self._waits.extend((now - r.t) * 1e3 for r in batch)
        if len(self._waits) > _MAX_SAMPLES:
            del self._waits[: _MAX_SAMPLES // 2]

    def _run(self, batch: list[_Request]) -> None:
        """Predictions into each request; a failed batch is retried request by request."""
        try:
            results = _run_requests(self.model, batch)
        except Exception:  # noqa: BLE001 - find the request that fails, fail only its stream
            for r in batch:
                try:
                    r.result = _run_requests(self.model, [r])[0]
                except Exception as exc:  # noqa: BLE001 - raised in that stream's thread
                    r.error = exc
                r.done = True
            return
        for r, result in zip(batch, results, strict=True):
            r.result, r.done = result, True


class BatchClient:
    """One stream's view of a :class:`SharedLandmarker`: ``predict`` as a landmarker has."""

    def __init__(self, shared: SharedLandmarker, name: str) -> None:
        self.shared, self.name = shared, name

    def begin(self) -> None:
        """This stream started a frame: batches wait (up to ``wait_s``) for its request."""
        self.shared._mark(self, True)

    def end(self) -> None:
        """This stream finished its frame (or ended): batches no longer wait for it."""
        self.shared._mark(self, False)

    def predict(self, image: np.ndarray, boxes: Sequence[Box],
                angles: Sequence[float] | None = None) -> list[Any]:
        """Predictions for ``boxes`` of ``image``, computed in a batch with other streams'."""
        if not boxes:
            return []
        return self.shared._submit(_Request(self, image, list(boxes), angles))

    def away(self, detector: Any) -> Any:
        """``detector`` marking this stream as not mid-frame while it runs (a detector call
        takes milliseconds: batches do not wait for a stream that is in one)."""
        return _AwayDetector(detector, self)


class _AwayDetector:
    def __init__(self, detector: Any, client: BatchClient) -> None:
        self.detector, self.client = detector, client

    def detect(self, image: np.ndarray) -> list[Box]:
        self.client.end()
        try:
            return self.detector.detect(image)  # type: ignore[no-any-return]
        finally:
            self.client.begin()


class BatchedTrack(Stage):
    """A track stage whose landmarker is ``client``: each frame is bracketed by
    :meth:`BatchClient.begin` / :meth:`BatchClient.end`, so batches wait only for streams
    that are mid-frame. Attributes (``stats``) are the wrapped stage's."""

    def __init__(self, inner: Stage, client: BatchClient) -> None:
        self.name = inner.name
        self.inner, self.client = inner, client

    def __getattr__(self, attr: str) -> Any:
        if attr in ("inner", "client"):
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def attach(self, stop: threading.Event) -> None:
        self.inner.attach(stop)

    def open(self) -> None:
        self.inner.open()

    def process(self, item: Frame) -> TrackedFrame:
        self.client.begin()
        try:
            return self.inner.process(item)  # type: ignore[no-any-return]
        finally:
            self.client.end()

    def close(self) -> None:
        self.client.end()
        self.inner.close()
