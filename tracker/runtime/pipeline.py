"""Streaming spine: bounded channels, one thread per stage, and a runner that stops them all.

A :class:`Pipeline` is a small graph of stages joined by :class:`Channel` s. A stage without an
input channel is a *source* (it implements :meth:`Stage.items`); every other stage handles one
item at a time in :meth:`Stage.process` and forwards what it returns to each of its output
channels (fan-out: one channel per consumer). A stage without outputs is a *sink*.

Shutdown rules:

* End of stream: a source that runs out closes its outputs; each consumer drains its input,
  closes its own outputs and finishes, so files see every item.
* A clean stop (Ctrl-C, :class:`StopRequested` from a stage such as the preview window's ``q``,
  :meth:`Pipeline.stop`) stops the sources only: what is already queued drains through every
  branch, so all outputs end on the same frame. A sink that ends early detaches its input, so
  it never blocks its producer. A drain longer than ``stop_grace_s`` is cut short.
* Failure (or ``stop(drain=False)``): the first exception in any stage sets the abort event;
  every blocked ``put`` / ``get`` wakes within :data:`POLL_S` and the stage ends, queued items
  are abandoned. :meth:`Pipeline.run` re-raises it as a :class:`StageError` naming the stage.
* Every stage's :meth:`Stage.close` is called in its own thread whatever happened, so sinks
  always finalise their files.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tracker.runtime.channel import END, POLICIES, Channel, ChannelMetrics, Policy, Stopped
from tracker.runtime.metrics import Metrics, StageMetrics, StageTimer
from tracker.runtime.stage import (
    FunctionStage,
    IterableSource,
    Stage,
    StageChain,
    StageError,
    StopRequested,
)
from tracker.runtime.threads import Worker, lower_os_priority

__all__ = [  # the spine's names, importable from here as before the split
    "END", "POLICIES", "Channel", "ChannelMetrics", "FunctionStage", "IterableSource", "Metrics",
    "Pipeline", "PipelineConfig", "Policy", "Stage", "StageChain", "StageError", "StageMetrics",
    "StageTimer", "StopRequested", "Stopped",
]



@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """Channel sizes and overflow policy of a run (the ``[pipeline]`` config section)."""

    queue_size: int = 8  # decode -> track (and track -> smooth)
    sink_queue_size: int = 32  # track -> each sink
    policy: str = "auto"  # auto (files block, live drop_oldest) | block | drop_oldest
    batch_streams: bool = True  # several sources: one model batches all streams' faces
    batch_wait_ms: float = 2.0  # longest wait for the other streams' faces before a batch runs


@dataclass(slots=True)
class _Node:
    stage: Stage
    input: Channel | None
    outputs: tuple[Channel, ...]
    timer: StageTimer
    thread: Worker | None = None


class Pipeline:
    """Runs stages on their own threads, joined by channels; see the module docstring."""

    def __init__(self, stop_grace_s: float = 5.0) -> None:
        self.stop_event = threading.Event()  # set: sources stop, queued items drain
        self.abort_event = threading.Event()  # set: every stage stops, queued items are dropped
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

        The wrapper must keep the stage's name; stages it returns unchanged cost nothing. The
        stages of a :class:`StageChain` are wrapped one by one (the chain itself is not).
        """
        if self._started is not None:
            raise RuntimeError("stages can only be wrapped before the run")
        for node in self._nodes:
            stage = node.stage
            if isinstance(stage, StageChain):
                inner = [wrapper(s) for s in stage.stages]
                if any(a is not b for a, b in zip(inner, stage.stages, strict=True)):
                    node.stage = StageChain(inner)
            else:
                node.stage = wrapper(stage)

    def stop(self, reason: str = "stopped", *, drain: bool = True) -> None:
        """Stop the sources; with ``drain`` what is queued still reaches every sink, without
        it every stage stops as soon as possible."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stop_event.set()
        if not drain:
            self.abort_event.set()
        for ch in self._channels:
            ch.wake()

    @property
    def error(self) -> tuple[str, BaseException] | None:
        return self._error

    def _fail(self, stage: str, error: BaseException) -> None:
        with self._error_lock:
            if self._error is None:
                self._error = (stage, error)
        self.stop(f"{stage} failed", drain=False)

    def _put_all(self, node: _Node, item: Any) -> None:
        for ch in node.outputs:
            ch.put(item, self.abort_event)

    def _run_node(self, node: _Node) -> None:
        stage, timer, stop = node.stage, node.timer, self.stop_event
        lower_os_priority(stage.nice)
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
                    item = node.input.get(self.abort_event)
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
            if node.input is not None:
                node.input.detach()  # a stage that ended early never blocks its producer
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
            stages=tuple(t.metrics() for n in self._nodes
                         for t in (n.stage.timers if isinstance(n.stage, StageChain)
                                   else (n.timer,))),
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
            node.thread = Worker(self._run_node, args=(node,), name=f"stage-{node.stage.name}")
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
                self.stop("interrupted", drain=interrupts == 1)  # a second one: drop the queues
                if interrupts >= 3:  # the user insists: stop waiting for stuck stages
                    break
            except Exception as exc:  # noqa: BLE001 - a failing callback stops the run too
                self._fail("on_tick", exc)
            if stopped_at is None and self.stop_event.is_set():
                stopped_at = time.monotonic()
            elif stopped_at is not None and time.monotonic() - stopped_at > self.stop_grace_s:
                self.abort_event.set()  # the drain took too long: drop what is left
                for ch in self._channels:
                    ch.wake()
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
            if not node.thread.running:
                continue
            abandon = (
                stopped_at is not None
                and node.outputs
                and time.monotonic() - stopped_at > self.stop_grace_s
            )
            if abandon:
                continue
            if not node.thread.wait(max(0.0, deadline - time.monotonic())):
                return True
        return False
