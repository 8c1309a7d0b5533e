"""The ``--ray`` backend: one Ray task per video on a running cluster (or a local instance).

Each task declares its resources (``num_cpus=1``; ``num_gpus=1`` for the cuda and tensorrt
engines) and runs :func:`tracker.batch.worker.run_task` in a Ray worker process, which keeps
its tracker (and so its models) between tasks: tasks are plain functions with
``max_calls=0``, so Ray reuses the worker process (GPU tasks included). Worker processes get
one-thread BLAS/OpenMP/Numba pools through the job's ``runtime_env``. A task whose worker or
node died is retried by Ray (``max_retries``); a bad input is not an exception but a
``failed`` row, so it is never retried within the run. At most ``in_flight`` tasks (default
twice the cluster's CPUs, or GPUs) are submitted at a time (``ray.wait``).

Every node must have ``tracker`` installed and see the inputs and the out-dir at the same
paths (docs/batch.md). ``ray`` is an optional dependency: ``pip install 'tracker[ray]'``.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any, TypeVar

from tracker.batch.worker import Task, run_task, thread_env
from tracker.errors import UsageError

J = TypeVar("J")
RAY_HINT = "--ray needs Ray, which is not installed: pip install 'tracker[ray]'"
GPU_ENGINES = ("cuda", "tensorrt")


def import_ray() -> ModuleType:
    """The ``ray`` module, or :class:`UsageError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError(RAY_HINT) from None
    return ray


def task_resources(engine: str) -> dict[str, float]:
    """The resources one video's task declares for ``engine``."""
    if engine in GPU_ENGINES:
        return {"num_cpus": 1, "num_gpus": 1}
    return {"num_cpus": 1, "num_gpus": 0}


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a HOST:PORT nothing listens on (Ray itself retries for minutes)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UsageError(f"cannot reach the Ray head at {address}: "
                         f"{exc.strerror or type(exc).__name__}") from None


def _connect(ray: ModuleType, address: str) -> None:
    _check_reachable(address)
    env = {"env_vars": thread_env(1)}
    try:
        if address == "local":  # a throwaway single-machine instance
            ray.init(address="local", runtime_env=env, include_dashboard=False,
                     logging_level=logging.WARNING,
                     log_to_driver=False)
        else:
            ray.init(address=address, runtime_env=env, logging_level=logging.WARNING,
                     log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        hint = "" if os.environ.get("RAY_AUTH_MODE") else (
            " (a cluster with token authentication needs RAY_AUTH_MODE=token here)")
        raise UsageError(f"cannot connect to the Ray cluster at {address}: {first}{hint}") from None


def _error_row(exc: BaseException) -> dict[str, Any]:
    first = (str(exc).strip().splitlines() or [""])[0].strip()
    return {"status": "failed", "error_type": type(exc).__name__,
            "error": f"Ray gave up on the task: {first or type(exc).__name__}"}


def run_ray(items: Iterable[tuple[J, Task]], on_result: Callable[[J, dict[str, Any]], None],
            address: str, *, engine: str = "auto", in_flight: int | None = None,
            retries: int = 2) -> str:
    """Run every ``(job, task)`` as a Ray task on the cluster at ``address`` (``auto``,
    ``HOST:PORT``, ``ray://HOST:PORT`` or ``local``); ``on_result(job, row)`` is called here
    as tasks end. Returns a one-line description of the cluster."""
    ray = import_ray()
    _connect(ray, address)
    try:
        res = task_resources(engine)
        unit = "GPU" if res["num_gpus"] else "CPU"
        slots = int(ray.cluster_resources().get(unit, 0))
        limit = max(2, in_flight or 2 * slots)
        remote = ray.remote(**res, max_retries=retries, retry_exceptions=False,
                            max_calls=0)(run_task)
        pending: dict[Any, J] = {}
        try:
            for job, task in items:
                while len(pending) >= limit:
                    _collect(ray, pending, on_result)
                pending[remote.remote(task)] = job
            while pending:
                _collect(ray, pending, on_result)
        finally:
            for ref in pending:  # interrupted or aborted: stop what still runs
                ray.cancel(ref, force=True)
        return f"Ray cluster {address} ({slots} {unit}s)"
    finally:
        ray.shutdown()


def _collect(ray: ModuleType, pending: dict[Any, J],
             on_result: Callable[[J, dict[str, Any]], None]) -> None:
    ready, _ = ray.wait(list(pending), num_returns=1)
    for ref in ready:
        job = pending.pop(ref)
        try:
            row = ray.get(ref)
        except ray.exceptions.RayError as exc:  # retries used up: worker or node kept dying
            row = _error_row(exc)
        on_result(job, row)
