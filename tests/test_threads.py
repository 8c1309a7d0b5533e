"""Ctrl-C landing while a runner waits for its threads never makes it stop waiting early.

Each scenario runs in a fresh interpreter (as the CLI's signal tests do): in the long-lived
test process, a signal delivered to the main thread crashed inside a native library loaded
by earlier tests (SIGSEGV in the handler, not in this code).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

ALARM = """
import signal, threading, time
from tracker.runtime.pipeline import Pipeline, Stage
from tracker.runtime.threads import Worker

def interrupt_after(seconds):
    def handler(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGUSR1, handler)
    timer = threading.Timer(seconds, signal.pthread_kill,
                            (threading.main_thread().ident, signal.SIGUSR1))
    timer.start()
    return timer
"""


def run_scenario(body: str) -> None:
    """Run ``ALARM`` + ``body`` in a new interpreter; fail with its output unless it exits 0."""
    code = ALARM + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_an_interrupted_wait_leaves_the_worker_running() -> None:
    run_scenario("""
        release = threading.Event()
        worker = Worker(lambda: release.wait(20), name="held")
        worker.start()
        interrupt_after(0.2)
        try:
            worker.wait(10)
            raise SystemExit("the wait was not interrupted")
        except KeyboardInterrupt:
            pass
        assert worker.running, "marked stopped while it runs"  # Thread.join on 3.11 would
        release.set()
        assert worker.wait(10) and not worker.running
    """)


def test_ctrl_c_while_the_runner_waits_for_a_sink_returns_after_the_sink_closed() -> None:
    run_scenario("""
        class Slow(Stage):  # 0.1 s an item, 0.5 s to close
            name = "slow"
            def __init__(self):
                self.items, self.closed_at = [], None
            def process(self, item):
                time.sleep(0.1)
                self.items.append(item)
            def close(self):
                time.sleep(0.5)
                self.closed_at = time.monotonic()

        class Few(Stage):
            name = "few"
            def items(self):
                yield from range(6)

        sink = Slow()
        pipe = Pipeline()
        ch = pipe.channel("few", 8)
        pipe.add(Few(), outputs=[ch])
        pipe.add(sink, input=ch)
        interrupt_after(0.25)  # the source is done by then: the runner waits on the sink
        try:
            pipe.run(tick_s=5.0)
            raise SystemExit("the run was not interrupted")
        except KeyboardInterrupt:
            returned = time.monotonic()
        assert sink.closed_at is not None and sink.closed_at <= returned, "returned first"
        assert sink.items == list(range(6)), sink.items  # the first Ctrl-C drains the queue
    """)


def test_what_a_worker_raised_is_kept_for_the_caller() -> None:
    from tracker.runtime.threads import Worker

    def fail() -> None:
        raise ValueError("no kernels")

    worker = Worker(fail, name="failing")
    worker.start()
    assert worker.wait(10) and not worker.running
    assert isinstance(worker.error, ValueError) and str(worker.error) == "no kernels"
