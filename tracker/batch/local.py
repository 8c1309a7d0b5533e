"""The default backend: a local pool of single-threaded worker processes.

``concurrent.futures.ProcessPoolExecutor`` with the ``spawn`` start method (forking a process
that runs threads is unsafe), one process per core, each pinned to one thread
(:func:`tracker.batch.worker.init_pool_worker`) and keeping its tracker between videos. At most
``in_flight`` videos (default twice the workers) are submitted at a time, so a list of a
million inputs never becomes a million pending futures.

A worker that dies (killed, out of memory, a crash in native code) breaks the whole pool: the
pool is rebuilt, and the videos that were in flight run again one at a time, so the one that
kills its worker is found and fails alone after ``retries`` more deaths, while the others
finish.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any, TypeVar

from tracker.batch.worker import Task, init_pool_worker, run_task, thread_env

J = TypeVar("J")
OnResult = Callable[[J, dict[str, Any]], None]


def default_workers() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def died_row(deaths: int) -> dict[str, Any]:
    """Manifest fields of a video whose worker process died every time it ran it."""
    return {"status": "failed", "error_type": "WorkerDied",
            "error": f"the worker process died while processing it {deaths} times "
                     "(killed, out of memory, or a crash in native code)"}


class _Pool:
    """A process pool that can be rebuilt after a worker died."""

    def __init__(self, workers: int, threads: int) -> None:
        self.workers, self.threads = workers, threads
        self.executor = self._new()

    def _new(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=init_pool_worker, initargs=(self.threads,))

    def rebuild(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.executor = self._new()

    def close(self, kill: bool) -> None:
        if kill:  # Ctrl-C: videos in flight are abandoned (their temp files are cleaned later)
            for proc in list(getattr(self.executor, "_processes", {}).values()):
                proc.terminate()
        self.executor.shutdown(wait=True, cancel_futures=True)


def run_local(items: Iterable[tuple[J, Task]], on_result: OnResult[J], workers: int, *,
              in_flight: int | None = None, retries: int = 2, threads: int = 1) -> None:
    """Run every ``(job, task)`` on a pool of ``workers`` processes; ``on_result(job, row)``
    is called in this thread as each video ends, in completion order."""
    with _child_env(thread_env(threads)):
        _run(items, on_result, workers, max(1, in_flight or 2 * workers), retries, threads)


@contextmanager
def _child_env(env: dict[str, str]) -> Iterator[None]:
    """``env`` set while the pool spawns processes: a spawned child imports this program's
    main module (numpy, Numba) before its initializer runs, so the initializer is too late."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run(items: Iterable[tuple[J, Task]], on_result: OnResult[J], workers: int, limit: int,
         retries: int, threads: int) -> None:
    source: Iterator[tuple[J, Task]] = iter(items)
    again: deque[tuple[J, Task]] = deque()  # submitted to a pool that broke before it ran them
    suspects: deque[tuple[J, Task]] = deque()  # in flight when a worker died: run alone
    deaths: Counter[str] = Counter()
    running: dict[Future[dict[str, Any]], tuple[J, Task]] = {}
    pool = _Pool(workers, threads)
    finished = False
    try:
        while True:
            broken = _fill(pool, running, again, suspects, source, limit)
            if not running and not broken:
                break
            lost: list[tuple[J, Task]] = []
            if running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    item = running.pop(fut)
                    try:
                        row = fut.result()
                    except BrokenProcessPool:
                        lost.append(item)
                        broken = True
                        continue
                    on_result(item[0], row)
            if not broken:
                continue
            lost += running.values()  # a broken pool fails every future it holds
            running.clear()
            pool.rebuild()
            if len(lost) == 1:  # ran alone: this video killed its worker
                job, task = lost[0]
                deaths[task.source] += 1
                if deaths[task.source] > retries:
                    on_result(job, died_row(deaths[task.source]))
                else:
                    suspects.appendleft(lost[0])
            else:
                suspects.extend(lost)
        finished = True
    finally:
        pool.close(kill=not finished)


def _fill(pool: _Pool, running: dict[Future[dict[str, Any]], tuple[J, Task]],
          again: deque[tuple[J, Task]], suspects: deque[tuple[J, Task]],
          source: Iterator[tuple[J, Task]], limit: int) -> bool:
    """Submit videos up to ``limit`` in flight (a suspect only alone); True when the pool
    turned out broken."""
    while len(running) < limit:
        alone = bool(suspects)
        if alone and running:
            return False
        item = suspects.popleft() if alone else again.popleft() if again else next(source, None)
        if item is None:
            return False
        try:
            running[pool.executor.submit(run_task, item[1])] = item
        except BrokenProcessPool:
            (suspects if alone else again).appendleft(item)
            return True
        if alone:
            return False
    return False
