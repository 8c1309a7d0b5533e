"""Stages: one unit of work on its own thread (open, items or process, close), and the ways
a stage stops or fails."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from tracker.runtime.metrics import StageTimer


class StopRequested(Exception):
    """Raise from a stage to stop the whole pipeline cleanly (not an error)."""


class StageError(RuntimeError):
    """The first exception raised by a stage; ``stage`` names it, ``__cause__`` is the original."""

    def __init__(self, stage: str, error: BaseException) -> None:
        super().__init__(f"stage {stage!r} failed: {error}")
        self.stage = stage
        self.error = error


class Stage:
    """Base class of pipeline stages; override :meth:`items` (sources) or :meth:`process`."""

    name: str = "stage"
    # niceness added to this stage's thread (and the threads its libraries start from it): the
    # stages that queues give slack to yield the cores to the track stage, which every output
    # waits for (Linux; --out --jsonl on 2 cores: 14.2 -> 13.3 s; README "Speed")
    nice: int = 0

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


class StageChain(Stage):
    """Several processing stages run one after another on one thread: each one's output is the
    next one's input, and a None from one ends that item. Each stage keeps its own timer
    (:attr:`timers`), which the pipeline reports in place of the chain's. Every queue hop
    between threads hands the GIL over (README "Speed": the stages after tracking on the
    track stage's thread)."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        if not stages:
            raise ValueError("a stage chain needs at least one stage")
        self.stages = tuple(stages)
        self.name = "+".join(s.name for s in self.stages)
        self.timers = tuple(StageTimer(s.name) for s in self.stages)

    def open(self) -> None:
        for s in self.stages:
            s.open()

    def attach(self, stop: threading.Event) -> None:
        for s in self.stages:
            s.attach(stop)

    def process(self, item: Any) -> Any:
        clock = time.perf_counter
        for s, timer in zip(self.stages, self.timers, strict=True):
            t0 = clock()
            item = s.process(item)
            timer.add(clock() - t0)
            if item is None:
                return None
        return item

    def close(self) -> None:
        """Closes every stage, last first, even when one raises (the first error is raised)."""
        error: BaseException | None = None
        for s in reversed(self.stages):
            try:
                s.close()
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                error = error or exc
        if error is not None:
            raise error


class IterableSource(Stage):
    """A source stage over any iterable (tests, benchmarks, replay)."""

    def __init__(self, name: str, iterable: Any) -> None:
        self.name = name
        self._iterable = iterable

    def items(self) -> Iterator[Any]:
        yield from self._iterable
