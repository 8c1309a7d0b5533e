"""A thread whose end can be waited for safely while Ctrl-C is delivered.

On CPython 3.11, a ``KeyboardInterrupt`` that lands inside ``Thread.join`` can mark a thread
that is still running as stopped (``is_alive()`` False; CPython gh-90882), so a runner
would stop waiting for a sink that has not finalised its file, and the interpreter would
exit under a thread still inside native code. :class:`Worker` records its own end in an
event, which an interrupt cannot corrupt. On Linux the thread also carries its name in the
OS (``top -H``, ``perf``, ``/proc/PID/task/*/comm`` show ``stage-track``, not ``python``).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any

_PR_SET_NAME = 15  # prctl option: the calling thread's name (15 bytes at most)


def lower_os_priority(nice: int) -> None:
    """Raise the calling thread's niceness by ``nice`` (threads it starts from now on inherit
    it, as libx264's do); Linux only, where niceness is per thread, best effort (elsewhere
    ``setpriority`` would name a process, not this thread)."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:
        pass


def name_os_thread(name: str) -> None:
    """Give the calling thread ``name`` (cut to 15 bytes) in the OS; Linux only, best effort."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None).prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Worker(threading.Thread):
    """A daemon thread running ``target(*args)``; :meth:`wait` and :attr:`running` rely on
    an event set when the target returns or raises, never on ``Thread.join``. What the target
    raised is kept in :attr:`error` for the caller, not printed."""

    def __init__(self, target: Callable[..., Any], *, name: str, args: tuple[Any, ...] = ()
                 ) -> None:
        super().__init__(name=name, daemon=True)
        self._work, self._work_args = target, args
        self.finished = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        name_os_thread(self.name)
        try:
            self._work(*self._work_args)
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that waits
            self.error = exc
        finally:
            self.finished.set()

    @property
    def running(self) -> bool:
        """True from :meth:`start` until the target has returned (or before start)."""
        return not self.finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for the target to end; True when it has."""
        return self.finished.wait(timeout)
