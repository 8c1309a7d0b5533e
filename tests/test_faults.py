"""Fault injection: the hook itself, and randomised faults through the real CLI (short run).

The full 200-trial run with figures is ``python benchmarks/fault_injection.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from stubs import run_cli

from tracker.cli.app import ExitCode
from tracker.runtime import faults
from tracker.runtime.faults import Fault, FaultyStage, InjectedFault, inject, parse_faults
from tracker.runtime.pipeline import IterableSource, Pipeline, Stage

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import fault_injection  # noqa: E402


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("", ()),
        ("track@3", (Fault("track", 3),)),
        ("video@close:os, decode@open:memory",
         (Fault("video", "close", "os"), Fault("decode", "open", "memory"))),
        ("jsonl@0:value,", (Fault("jsonl", 0, "value"),)),
    ],
)
def test_parse_faults(spec: str, expected: tuple[Fault, ...]) -> None:
    assert parse_faults(spec) == expected


@pytest.mark.parametrize("spec", ["track", "@3", "track@soon", "track@3:segfault", "track@-1"])
def test_bad_fault_specs_are_rejected(spec: str) -> None:
    with pytest.raises(ValueError, match="bad fault"):
        parse_faults(spec)


class Recorder(Stage):
    name = "sink"

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.calls: list[str] = []

    def open(self) -> None:
        self.calls.append("open")

    def process(self, item: Any) -> None:
        self.items.append(item)

    def close(self) -> None:
        self.calls.append("close")


def run_with(fault: str | None) -> tuple[Pipeline, Recorder, list[FaultyStage]]:
    p = Pipeline()
    ch = p.channel("ch", 2)
    p.add(IterableSource("source", range(10)), outputs=[ch])
    sink = Recorder()
    p.add(sink, input=ch)
    return p, sink, inject(p, fault)


@pytest.mark.parametrize(
    "fault, items, calls",
    [
        ("sink@4", [0, 1, 2, 3], ["open", "close"]),
        ("sink@open", [], ["close"]),
        ("sink@close", list(range(10)), ["open", "close"]),  # closed (finalised) before raising
        ("source@6", list(range(6)), ["open", "close"]),  # queued items may be abandoned
    ],
)
def test_a_fault_stops_the_pipeline_at_its_point(fault: str, items: list[int],
                                                 calls: list[str]) -> None:
    p, sink, wrapped = run_with(fault)
    with pytest.raises(Exception, match="injected fault") as info:
        p.run()
    exact = fault.startswith("sink")
    assert sink.items == (items if exact else items[: len(sink.items)])
    assert sink.calls == calls
    assert info.value.stage == fault.split("@")[0]  # type: ignore[attr-defined]
    assert isinstance(info.value.__cause__, InjectedFault)
    assert len(wrapped) == 1 and wrapped[0].fired_at is not None


def test_no_fault_leaves_the_stages_untouched() -> None:
    p, sink, wrapped = run_with(None)
    before = p.stages
    p.run()
    assert wrapped == [] and p.stages == before and sink.items == list(range(10))


def test_a_fault_for_a_missing_stage_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        run_with("nope@1")


def test_bad_fault_variable_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(faults.ENV, "track@whenever")
    code = run_cli(["run", "--source", "lavfi:testsrc2=size=64x48:rate=10:duration=0.2",
                 "--jsonl", str(tmp_path / "x.jsonl")])
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE and faults.ENV in err and "Traceback" not in err


def test_random_faults_never_hang_or_lose_finalised_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """24 randomised trials over every stage (the benchmark runs 200 and reports timings)."""
    results = fault_injection.run_trials(24, seed=7, n_frames=16, watchdog_s=60)
    failed = [(r.trial, r.problems) for r in results if not r.ok]
    assert sum(r.fired for r in results) == 24 and not failed
    assert {r.trial.split("@")[0] for r in results} >= {"decode", "track", "render", "video"}


def test_a_fault_reaches_a_stage_inside_a_chain() -> None:
    from tracker.runtime.pipeline import FunctionStage, StageChain

    p = Pipeline()
    a, b = p.channel("a", 2), p.channel("b", 2)
    p.add(IterableSource("source", range(10)), outputs=[a])
    p.add(StageChain([FunctionStage("track", lambda x: x), FunctionStage("smooth", lambda x: x)]),
          input=a, outputs=[b])
    sink = Recorder()
    p.add(sink, input=b)
    wrapped = inject(p, "smooth@3")
    assert [w.name for w in wrapped] == ["smooth"]
    with pytest.raises(Exception, match="injected fault"):
        p.run()
    assert sink.items == [0, 1, 2][: len(sink.items)] and sink.calls == ["open", "close"]
