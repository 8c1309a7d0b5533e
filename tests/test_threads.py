"""Ctrl-C landing while a runner waits for its threads never makes it stop waiting early."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tracker.runtime.pipeline import Pipeline, Stage
from tracker.runtime.threads import Worker

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


class _Alarm:
    """Raises KeyboardInterrupt in the main thread ``after`` seconds (as Ctrl-C would). The
    signal goes to the main thread alone (``pthread_kill``): a process-wide timer signal could
    land on a native library's worker thread left by earlier tests."""

    def __init__(self, after: float) -> None:
        self.after = after

    def __enter__(self) -> _Alarm:
        def handler(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        self._previous = signal.signal(signal.SIGUSR1, handler)
        main = threading.main_thread().ident
        assert main is not None and threading.current_thread() is threading.main_thread()
        self._timer = threading.Timer(self.after, signal.pthread_kill, (main, signal.SIGUSR1))
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        self._timer.join()
        signal.signal(signal.SIGUSR1, self._previous)


def test_an_interrupted_wait_leaves_the_worker_running() -> None:
    release = threading.Event()
    worker = Worker(lambda: release.wait(20), name="held")
    worker.start()
    with _Alarm(0.2), pytest.raises(KeyboardInterrupt):
        worker.wait(10)
    assert worker.running  # Thread.join on CPython 3.11 would have marked it stopped here
    release.set()
    assert worker.wait(10) and not worker.running


class _Slow(Stage):
    """A sink taking 0.1 s an item and 0.5 s to close."""

    name = "slow"

    def __init__(self) -> None:
        self.items: list[int] = []
        self.closed_at: float | None = None

    def process(self, item: int) -> None:
        time.sleep(0.1)
        self.items.append(item)

    def close(self) -> None:
        time.sleep(0.5)
        self.closed_at = time.monotonic()


class _Few(Stage):
    name = "few"

    def items(self) -> Iterator[int]:
        yield from range(6)


def test_ctrl_c_while_the_runner_waits_for_a_sink_returns_after_the_sink_closed() -> None:
    sink = _Slow()
    pipe = Pipeline()
    ch = pipe.channel("few", 8)
    pipe.add(_Few(), outputs=[ch])
    pipe.add(sink, input=ch)
    with _Alarm(0.25), pytest.raises(KeyboardInterrupt):  # the source is done: waiting on sink
        pipe.run(tick_s=5.0)
    returned = time.monotonic()
    assert sink.closed_at is not None and sink.closed_at <= returned
    assert sink.items == list(range(6))  # the first Ctrl-C drains what is queued
