"""Fault injection: make a named stage raise at a chosen point, to test that failures stay calm.

A fault is written ``STAGE@WHEN[:ERROR]``: ``WHEN`` is ``open``, ``close`` or an item number
(0-based; the N-th item the stage produces or handles), ``ERROR`` one of :data:`ERRORS`
(default ``runtime``). Several faults are separated by commas, e.g.
``TRACKER_FAULTS="track@17,video@close:os"``.

``tracker run`` reads :data:`ENV` and wraps the matching stages (see :func:`inject`); stages
without a fault are left untouched, so the hook costs nothing when unused. A ``close`` fault
fires after the stage's own close, so the stage still finalises its file.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tracker.errors import UsageError
from tracker.runtime.pipeline import Pipeline, Stage, StageChain

ENV = "TRACKER_FAULTS"
fired: list[tuple[str, float]] = []  # (fault, time.monotonic()) of each fault raised (harnesses)


class InjectedFault(RuntimeError):
    """The exception a ``runtime`` fault raises."""


ERRORS: dict[str, type[BaseException]] = {
    "runtime": InjectedFault,
    "os": OSError,
    "value": ValueError,
    "memory": MemoryError,
}


@dataclass(frozen=True, slots=True)
class Fault:
    """Raise ``error`` in stage ``stage`` at ``when``: ``"open"``, ``"close"`` or an item index."""

    stage: str
    when: str | int
    error: str = "runtime"

    def __str__(self) -> str:
        return f"{self.stage}@{self.when}:{self.error}"


def parse_faults(spec: str | None) -> tuple[Fault, ...]:
    """Faults from ``STAGE@WHEN[:ERROR],...``; raises ValueError naming a bad entry."""
    faults = []
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        stage, at, rest = part.partition("@")
        when_text, _, error = rest.partition(":")
        error = error or "runtime"
        if not stage or not at or error not in ERRORS:
            raise ValueError(f"bad fault {part!r}: expected STAGE@WHEN[:{'|'.join(ERRORS)}]")
        when: str | int
        if when_text in ("open", "close"):
            when = when_text
        elif when_text.isdigit():
            when = int(when_text)
        else:
            raise ValueError(f"bad fault {part!r}: WHEN must be open, close or an item number")
        faults.append(Fault(stage, when, error))
    return tuple(faults)


class FaultyStage(Stage):
    """Wraps a stage and raises its fault once; everything else is passed through."""

    def __init__(self, inner: Stage, fault: Fault) -> None:
        self.name = inner.name
        self.inner = inner
        self.fault = fault
        self.fired_at: float | None = None  # time.monotonic() when the fault was raised
        self.items_seen = 0

    def __getattr__(self, attr: str) -> Any:  # stats, info, writer, ... of the wrapped stage
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def _fire(self, where: str) -> None:
        self.fired_at = time.monotonic()
        fired.append((str(self.fault), self.fired_at))
        error = ERRORS[self.fault.error]
        raise error(f"injected fault in {self.name} at {where}")

    def attach(self, stop: threading.Event) -> None:
        attach = getattr(self.inner, "attach", None)
        if attach is not None:
            attach(stop)

    def open(self) -> None:
        if self.fault.when == "open":
            self._fire("open")
        self.inner.open()

    def items(self) -> Iterator[Any]:
        it = iter(self.inner.items())
        try:
            for item in it:
                if self.fault.when == self.items_seen:
                    self._fire(f"item {self.items_seen}")
                self.items_seen += 1
                yield item
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def process(self, item: Any) -> Any:
        if self.fault.when == self.items_seen:
            self._fire(f"item {self.items_seen}")
        self.items_seen += 1
        return self.inner.process(item)

    def close(self) -> None:
        self.inner.close()
        if self.fault.when == "close":
            self._fire("close")


def inject(pipe: Pipeline, faults: Sequence[Fault] | str | None) -> list[FaultyStage]:
    """Wrap the stages of ``pipe`` named by ``faults``; returns the wrappers (empty: no-op).

    Raises ValueError for a fault naming a stage the pipeline does not have.
    """
    plan = parse_faults(faults) if isinstance(faults, str) or faults is None else tuple(faults)
    if not plan:
        return []
    names = {inner.name for s in pipe.stages
             for inner in (s.stages if isinstance(s, StageChain) else (s,))}
    unknown = [f.stage for f in plan if f.stage not in names]
    if unknown:
        raise ValueError(f"fault for unknown stage {unknown[0]!r} (stages: {', '.join(names)})")
    by_stage = {f.stage: f for f in plan}  # one fault per stage: the last one given
    wrapped: list[FaultyStage] = []

    def wrap(stage: Stage) -> Stage:
        fault = by_stage.get(stage.name)
        if fault is None:
            return stage
        faulty = FaultyStage(stage, fault)
        wrapped.append(faulty)
        return faulty

    pipe.wrap(wrap)
    return wrapped


def inject_from_env(pipe: Pipeline) -> list[FaultyStage]:
    """:func:`inject` the faults named by the ``TRACKER_FAULTS`` environment variable."""
    try:
        return inject(pipe, os.environ.get(ENV))
    except ValueError as exc:
        raise UsageError(f"{ENV}: {exc}") from None
