"""Streaming spine: bounded channels, one thread per stage, and a runner that stops them all.

A :class:`Pipeline` is a small graph of stages joined by :class:`Channel` s. A stage without an
input channel is a *source* (it implements :meth:`Stage.items`); every other stage handles one
item at a time in :meth:`Stage.process` and forwards what it returns to each of its output
channels (fan-out: one channel per consumer). A stage without outputs is a *sink*.

Shutdown rules:

* End of stream: a source that runs out closes its outputs; each consumer drains its input,
  closes its own outputs and finishes, so files see every item.
* Failure: the first exception in any stage sets the shared stop event; every blocked ``put`` /
  ``get`` wakes within :data:`POLL_S` and the stage ends. :meth:`Pipeline.run` re-raises it as
  a :class:`StageError` naming the stage.
* :class:`StopRequested` raised by a stage (e.g. the preview window's ``q``) and Ctrl-C stop the
  same way, without an error.
* Every stage's :meth:`Stage.close` is called in its own thread whatever happened, so sinks
  always finalise their files.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

Policy = Literal["block", "drop_oldest"]
POLICIES: tuple[str, ...] = ("block", "drop_oldest")
POLL_S = 0.05  # how often blocked channel operations look at the stop event
_MAX_SAMPLES = 100_000  # per-stage timing samples kept (oldest half discarded beyond this)


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """Channel sizes and overflow policy of a run (the ``[pipeline]`` config section)."""

    queue_size: int = 8  # decode -> track (and track -> smooth)
    sink_queue_size: int = 32  # track -> each sink
    policy: str = "auto"  # auto (files block, live drop_oldest) | block | drop_oldest


class _EndOfStream:
    """Type of :data:`END`."""

    _instance: _EndOfStream | None = None

    def __new__(cls) -> _EndOfStream:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "END"


END = _EndOfStream()
"""Returned by :meth:`Channel.get` once a closed channel is empty."""


class Stopped(Exception):
    """Raised by a blocked channel operation when the pipeline is stopping."""


class StopRequested(Exception):
    """Raise from a stage to stop the whole pipeline cleanly (not an error)."""


class StageError(RuntimeError):
    """The first exception raised by a stage; ``stage`` names it, ``__cause__`` is the original."""

    def __init__(self, stage: str, error: BaseException) -> None:
        super().__init__(f"stage {stage!r} failed: {error}")
        self.stage = stage
        self.error = error


@dataclass(frozen=True, slots=True)
class ChannelMetrics:
    """Counters of one channel."""

    name: str
    capacity: int
    policy: str
    depth: int
    max_depth: int
    items: int
    dropped: int


class Channel:
    """Bounded FIFO between two stages with an explicit overflow policy.

    ``block``: :meth:`put` waits for room (nothing is ever lost) but gives up with
    :class:`Stopped` when the stop event is set. ``drop_oldest``: :meth:`put` never waits; when
    full, the oldest queued item is discarded and counted in ``dropped``.
    End of stream is a flag, not a queued item, so it can never be dropped: after :meth:`close`,
    :meth:`get` returns the remaining items and then :data:`END`.
    """

    def __init__(self, name: str, capacity: int, policy: str = "block") -> None:
        if capacity < 1:
            raise ValueError(f"channel {name!r}: capacity must be >= 1, got {capacity}")
        if policy not in POLICIES:
            raise ValueError(f"channel {name!r}: policy must be one of {POLICIES}, got {policy!r}")
        self.name = name
        self.capacity = int(capacity)
        self.policy = policy
        self._items: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.max_depth = 0
        self.puts = 0
        self.dropped = 0

    @property
    def depth(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: Any, stop: threading.Event | None = None) -> None:
        """Queue ``item`` according to the policy; raises :class:`Stopped` if ``stop`` gets set."""
        with self._cond:
            if self._closed:
                raise RuntimeError(f"put on closed channel {self.name!r}")
            if self.policy == "drop_oldest":
                while len(self._items) >= self.capacity:
                    self._items.popleft()
                    self.dropped += 1
            else:
                while len(self._items) >= self.capacity:
                    if stop is not None and stop.is_set():
                        raise Stopped(self.name)
                    self._cond.wait(POLL_S)
                    if self._closed:
                        raise RuntimeError(f"put on closed channel {self.name!r}")
            self._items.append(item)
            self.puts += 1
            self.max_depth = max(self.max_depth, len(self._items))
            self._cond.notify_all()

    def get(self, stop: threading.Event | None = None, timeout: float | None = None) -> Any:
        """Next item, or :data:`END` once closed and drained.

        Raises :class:`Stopped` when ``stop`` is set (queued items are then abandoned) and
        ``TimeoutError`` after ``timeout`` seconds without an item.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if stop is not None and stop.is_set():
                    raise Stopped(self.name)
                if self._items:
                    item = self._items.popleft()
                    self._cond.notify_all()
                    return item
                if self._closed:
                    return END
                wait = POLL_S
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        raise TimeoutError(f"no item on channel {self.name!r} in {timeout} s")
                self._cond.wait(wait)

    def close(self) -> None:
        """Mark end of stream (idempotent, never blocks)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wake(self) -> None:
        """Wake every waiter so it re-checks the stop event."""
        with self._cond:
            self._cond.notify_all()

    def metrics(self) -> ChannelMetrics:
        return ChannelMetrics(
            self.name, self.capacity, self.policy, self.depth, self.max_depth, self.puts,
            self.dropped,
        )


class Stage:
    """Base class of pipeline stages; override :meth:`items` (sources) or :meth:`process`."""

    name: str = "stage"

    def open(self) -> None:
        """Called in the stage's thread before the first item."""

    def items(self) -> Iterator[Any]:
        """Items produced by a source stage (a stage without input)."""
        raise NotImplementedError(f"stage {self.name!r} is not a source")

    def process(self, item: Any) -> Any:
        """Handle one input item; the return value (unless None) goes to every output."""
        raise NotImplementedError(f"stage {self.name!r} does not process items")

    def close(self) -> None:
        """Called once in the stage's thread when it ends, whatever the reason."""

    def attach(self, stop: threading.Event) -> None:
        """Called before the run with the pipeline's stop event (for stages that sleep or wait)."""


class FunctionStage(Stage):
    """A stage made from a per-item function (and an optional close function)."""

    def __init__(
        self,
        name: str,
        fn: Callable[[Any], Any],
        close: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self._fn = fn
        self._close = close

    def process(self, item: Any) -> Any:
        return self._fn(item)

    def close(self) -> None:
        if self._close is not None:
            self._close()


class IterableSource(Stage):
    """A source stage over any iterable (tests, benchmarks, replay)."""

    def __init__(self, name: str, iterable: Any) -> None:
        self.name = name
        self._iterable = iterable

    def items(self) -> Iterator[Any]:
        yield from self._iterable


@dataclass(frozen=True, slots=True)
class StageMetrics:
    """Per-item time spent inside one stage (queue waits excluded)."""

    name: str
    count: int
    p50_ms: float
    p99_ms: float
    mean_ms: float


class StageTimer:
    """Collects per-item durations of one stage; written by one thread, read by any."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self._samples: list[float] = []

    def add(self, seconds: float) -> None:
        self.count += 1
        self._samples.append(seconds * 1e3)
        if len(self._samples) > _MAX_SAMPLES:
            del self._samples[: _MAX_SAMPLES // 2]

    def metrics(self) -> StageMetrics:
        samples = np.asarray(self._samples[:], dtype=np.float64)
        if samples.size == 0:
            return StageMetrics(self.name, self.count, 0.0, 0.0, 0.0)
        p50, p99 = np.percentile(samples, [50, 99])
        return StageMetrics(self.name, self.count, float(p50), float(p99), float(samples.mean()))


@dataclass(frozen=True, slots=True)
class Metrics:
    """Snapshot of a pipeline run: throughput, per-stage latency, queue depths and drops."""

    frames: int
    seconds: float
    stages: tuple[StageMetrics, ...]
    channels: tuple[ChannelMetrics, ...]

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def dropped(self) -> int:
        return sum(c.dropped for c in self.channels)

    def stage(self, name: str) -> StageMetrics:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready) for reports and ``tracker bench``."""
        return {
            "frames": self.frames,
            "seconds": self.seconds,
            "fps": self.fps,
            "dropped": self.dropped,
            "stages": [asdict(s) for s in self.stages],
            "channels": [asdict(c) for c in self.channels],
        }


@dataclass(slots=True)
class _Node:
    stage: Stage
    input: Channel | None
    outputs: tuple[Channel, ...]
    timer: StageTimer
    thread: threading.Thread | None = None


class Pipeline:
    """Runs stages on their own threads, joined by channels; see the module docstring."""

    def __init__(self, stop_grace_s: float = 5.0) -> None:
        self.stop_event = threading.Event()
        self.stop_grace_s = stop_grace_s
        self._nodes: list[_Node] = []
        self._channels: list[Channel] = []
        self._error: tuple[str, BaseException] | None = None
        self._error_lock = threading.Lock()
        self._started: float | None = None
        self._finished: float | None = None
        self.stop_reason: str | None = None

    def channel(self, name: str, capacity: int, policy: str = "block") -> Channel:
        """Create a channel owned by this pipeline."""
        ch = Channel(name, capacity, policy)
        self._channels.append(ch)
        return ch

    def add(
        self, stage: Stage, input: Channel | None = None, outputs: Sequence[Channel] = ()
    ) -> Stage:
        """Add ``stage`` reading ``input`` (None: a source), writing to each of ``outputs``."""
        if any(n.stage.name == stage.name for n in self._nodes):
            raise ValueError(f"duplicate stage name {stage.name!r}")
        for ch in (input, *outputs):
            if ch is not None and ch not in self._channels:
                raise ValueError(f"channel {ch.name!r} was not created by this pipeline")
        self._nodes.append(_Node(stage, input, tuple(outputs), StageTimer(stage.name)))
        return stage

    @property
    def stages(self) -> tuple[Stage, ...]:
        """The stages, in the order they were added."""
        return tuple(n.stage for n in self._nodes)

    def wrap(self, wrapper: Callable[[Stage], Stage]) -> None:
        """Replace each stage by ``wrapper(stage)`` before the run (fault injection, tracing).

        The wrapper must keep the stage's name; stages it returns unchanged cost nothing.
        """
        if self._started is not None:
            raise RuntimeError("stages can only be wrapped before the run")
        for node in self._nodes:
            node.stage = wrapper(node.stage)

    def stop(self, reason: str = "stopped") -> None:
        """Ask every stage to stop as soon as possible."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stop_event.set()
        for ch in self._channels:
            ch.wake()

    @property
    def error(self) -> tuple[str, BaseException] | None:
        return self._error

    def _fail(self, stage: str, error: BaseException) -> None:
        with self._error_lock:
            if self._error is None:
                self._error = (stage, error)
        self.stop(f"{stage} failed")

    def _put_all(self, node: _Node, item: Any) -> None:
        for ch in node.outputs:
            ch.put(item, self.stop_event)

    def _run_node(self, node: _Node) -> None:
        stage, timer, stop = node.stage, node.timer, self.stop_event
        try:
            stage.open()
            if node.input is None:
                it = iter(stage.items())
                try:
                    while not stop.is_set():
                        t0 = time.perf_counter()
                        item = next(it, END)
                        if item is END:
                            break
                        timer.add(time.perf_counter() - t0)
                        self._put_all(node, item)
                finally:
                    close_it = getattr(it, "close", None)
                    if close_it is not None:
                        close_it()  # finish a generator before the stage closes its resources
            else:
                while True:
                    item = node.input.get(stop)
                    if item is END:
                        break
                    t0 = time.perf_counter()
                    out = stage.process(item)
                    timer.add(time.perf_counter() - t0)
                    if out is not None:
                        self._put_all(node, out)
        except Stopped:
            pass
        except StopRequested:
            self.stop(f"{stage.name} asked to stop")
        except BaseException as exc:  # noqa: BLE001 - any failure must stop the graph
            self._fail(stage.name, exc)
        finally:
            for ch in node.outputs:
                ch.close()
            try:
                stage.close()
            except BaseException as exc:  # noqa: BLE001
                self._fail(stage.name, exc)

    def metrics(self) -> Metrics:
        """Current counters (safe to call while running)."""
        start = self._started
        end = self._finished if self._finished is not None else time.perf_counter()
        seconds = 0.0 if start is None else end - start
        sources = [n for n in self._nodes if n.input is None]
        frames = sum(n.timer.count for n in sources)
        return Metrics(
            frames=frames,
            seconds=seconds,
            stages=tuple(n.timer.metrics() for n in self._nodes),
            channels=tuple(ch.metrics() for ch in self._channels),
        )

    def run(self, on_tick: Callable[[Metrics], None] | None = None, tick_s: float = 0.2) -> Metrics:
        """Run to completion; returns the final metrics.

        Raises :class:`StageError` for the first stage failure, and re-raises
        ``KeyboardInterrupt`` after every stage has stopped and every sink is closed.
        """
        if not any(n.input is None for n in self._nodes):
            raise ValueError("a pipeline needs at least one source stage (a stage without input)")
        if self._started is not None:
            raise RuntimeError("a pipeline runs only once")
        self._started = time.perf_counter()
        for node in self._nodes:
            attach = getattr(node.stage, "attach", None)
            if attach is not None:
                attach(self.stop_event)
        for node in self._nodes:
            node.thread = threading.Thread(
                target=self._run_node, args=(node,), name=f"stage-{node.stage.name}", daemon=True
            )
            node.thread.start()
        interrupts = 0
        stopped_at: float | None = None
        while True:
            try:
                if not self._wait(tick_s, stopped_at):
                    break
                if on_tick is not None:
                    on_tick(self.metrics())
            except KeyboardInterrupt:
                interrupts += 1
                self.stop("interrupted")
                if interrupts >= 3:  # the user insists: stop waiting for stuck stages
                    break
            except Exception as exc:  # noqa: BLE001 - a failing callback stops the run too
                self._fail("on_tick", exc)
            if stopped_at is None and self.stop_event.is_set():
                stopped_at = time.monotonic()
        self._finished = time.perf_counter()
        if self._error is not None:
            stage, error = self._error
            raise StageError(stage, error) from error
        if interrupts:
            raise KeyboardInterrupt
        return self.metrics()

    def _wait(self, tick_s: float, stopped_at: float | None) -> bool:
        """Join threads for up to ``tick_s``; True while any must still be waited for.

        After a stop, stages with outputs (sources, transforms) get ``stop_grace_s`` to end
        (a source may sit in blocking I/O); sinks are always waited for so files are finalised.
        """
        deadline = time.monotonic() + tick_s
        for node in self._nodes:
            assert node.thread is not None
            if not node.thread.is_alive():
                continue
            abandon = (
                stopped_at is not None
                and node.outputs
                and time.monotonic() - stopped_at > self.stop_grace_s
            )
            if abandon:
                continue
            node.thread.join(max(0.0, deadline - time.monotonic()))
            if node.thread.is_alive():
                return True
        return False
