"""Stage threads carry their names in the OS and the niceness their stage asks for."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tracker.runtime.pipeline import Pipeline
from tracker.runtime.stage import IterableSource, Stage
from tracker.runtime.threads import Worker, lower_os_priority

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux thread names")


def _comm() -> str:
    return Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@linux
def test_a_worker_names_its_os_thread_cut_to_15_bytes() -> None:
    seen: list[str] = []
    w = Worker(lambda: seen.append(_comm()), name="stage-a-rather-long-name")
    w.start()
    assert w.wait(10)
    assert seen == ["stage-a-rather-"]


@linux
def test_lower_os_priority_raises_the_calling_threads_niceness_only() -> None:
    before_main = _nice()
    seen: list[int] = []

    def body() -> None:
        start = _nice()
        lower_os_priority(3)
        seen.extend([start, _nice()])
        lower_os_priority(100)  # capped at 19, no error
        seen.append(_nice())

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen[1] == min(19, seen[0] + 3) and seen[2] == 19
    assert _nice() == before_main  # the caller's thread is untouched


@linux
def test_the_pipeline_runs_each_stage_at_its_niceness() -> None:
    class Probe(Stage):
        def __init__(self, name: str, nice: int) -> None:
            self.name, self.nice, self.seen = name, nice, []

        def process(self, item: Any) -> None:
            self.seen.append(_nice())

    base = _nice()
    slack, critical = Probe("slack", 7), Probe("critical", 0)
    p = Pipeline()
    a, b = p.channel("a", 4), p.channel("b", 4)
    p.add(IterableSource("src", range(3)), outputs=[a, b])
    p.add(slack, input=a)
    p.add(critical, input=b)
    p.run()
    assert slack.seen == [min(19, base + 7)] * 3
    assert critical.seen == [base] * 3


def test_render_yields_the_cores_only_when_no_preview_is_watched() -> None:
    from fractions import Fraction

    from tracker.api import assembly
    from tracker.config.schema import Config
    from tracker.io.specs import SourceInfo
    from tracker.runtime.pipeline import FunctionStage

    info = SourceInfo("clip.mp4", "file", 64, 48, 30.0, Fraction(1, 30), False, None, 1, False)

    def render_nice(**outputs: Any) -> int:
        pipe = assembly.build_pipeline(Config(), IterableSource("decode", []), info,
                                       FunctionStage("track", lambda x: x), **outputs)
        return next(s.nice for s in pipe.stages if s.name == "render")

    assert render_nice(writer=object()) > 0
    assert render_nice(writer=object(), preview_factory=lambda: None) == 0
