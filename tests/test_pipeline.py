"""Channels keep or drop items as their policy says; the runner always stops and closes sinks."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tracker.runtime.pipeline import (
    END,
    Channel,
    FunctionStage,
    IterableSource,
    Metrics,
    Pipeline,
    Stage,
    StageError,
    Stopped,
    StopRequested,
)

WATCHDOG_S = 20.0  # generous: a hang, not slowness, is what this catches


class Boom(RuntimeError):
    pass


class Collect(Stage):
    """A sink remembering what it got and whether it was closed."""

    def __init__(self, name: str, fail_at: int | None = None, fail_on_close: bool = False,
                 wait_for: threading.Event | None = None, fail_on_open: bool = False) -> None:
        self.name = name
        self.fail_on_open = fail_on_open
        self.items: list[Any] = []
        self.closed = 0
        self.fail_at = fail_at
        self.fail_on_close = fail_on_close
        self.wait_for = wait_for

    def open(self) -> None:
        if self.fail_on_open:
            raise Boom(f"{self.name} cannot open")
        if self.wait_for is not None:
            assert self.wait_for.wait(WATCHDOG_S)

    def process(self, item: Any) -> None:
        if self.fail_at is not None and len(self.items) == self.fail_at:
            raise Boom(f"{self.name} failed at item {item}")
        self.items.append(item)

    def close(self) -> None:
        self.closed += 1
        if self.fail_on_close:
            raise Boom(f"{self.name} failed to close")


class Numbers(Stage):
    """A source of 0, 1, 2, ... (endless when ``n`` is None); may fail at item ``fail_at``."""

    name = "numbers"

    def __init__(self, n: int | None, fail_at: int | None = None,
                 done: threading.Event | None = None) -> None:
        self.n, self.fail_at, self.done = n, fail_at, done
        self.closed = 0

    def items(self) -> Iterator[int]:
        for i in itertools.count() if self.n is None else range(self.n):
            if i == self.fail_at:
                raise Boom(f"source failed at {i}")
            yield i
        if self.done is not None:
            self.done.set()

    def close(self) -> None:
        self.closed += 1


def run_guarded(pipe: Pipeline, **kwargs: Any) -> tuple[Metrics | None, BaseException | None]:
    """``pipe.run()`` on a thread; fails the test if it has not returned within the watchdog."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["metrics"] = pipe.run(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(WATCHDOG_S)
    assert not t.is_alive(), "pipeline did not stop (deadlock)"
    return result.get("metrics"), result.get("error")


def chain(source: Stage, *sinks: Collect, capacity: int = 1, double_fail_at: int | None = None
          ) -> Pipeline:
    """source -> double -> each sink (fan-out), every channel of ``capacity``."""
    pipe = Pipeline()
    src_out = pipe.channel("src", capacity)
    pipe.add(source, outputs=[src_out])
    outs = [pipe.channel(f"to-{s.name}", capacity) for s in sinks]

    def double(x: int) -> int:
        if x == double_fail_at:
            raise Boom(f"double failed at {x}")
        return 2 * x

    pipe.add(FunctionStage("double", double), input=src_out, outputs=outs)
    for s, ch in zip(sinks, outs, strict=True):
        pipe.add(s, input=ch)
    return pipe


# --- Channel ---------------------------------------------------------------------------------


def test_block_channel_never_loses_an_item() -> None:
    ch = Channel("c", capacity=2, policy="block")
    n = 2000
    got: list[int] = []

    def consume() -> None:
        while (item := ch.get(timeout=WATCHDOG_S)) is not END:
            got.append(item)

    t = threading.Thread(target=consume)
    t.start()
    for i in range(n):
        ch.put(i)
    ch.close()
    t.join(WATCHDOG_S)
    assert got == list(range(n))
    assert ch.dropped == 0 and ch.max_depth <= 2 and ch.puts == n


@pytest.mark.parametrize("capacity, n", [(1, 10), (5, 100), (8, 8), (8, 3)])
def test_drop_oldest_bounds_depth_and_counts_drops(capacity: int, n: int) -> None:
    ch = Channel("c", capacity=capacity, policy="drop_oldest")
    for i in range(n):
        ch.put(i)  # never blocks, even with nobody reading
    assert ch.depth == min(n, capacity) == ch.max_depth
    assert ch.dropped == max(0, n - capacity)
    ch.close()
    rest = []
    while (item := ch.get()) is not END:
        rest.append(item)
    assert rest == list(range(max(0, n - capacity), n))  # the newest survive, in order


def test_closed_channel_drains_then_ends_and_refuses_puts() -> None:
    ch = Channel("c", 4)
    ch.put("a")
    ch.close()
    ch.close()  # idempotent
    assert [ch.get(), ch.get(), ch.get()] == ["a", END, END]
    with pytest.raises(RuntimeError, match="closed"):
        ch.put("b")


@pytest.mark.parametrize("op", ["put_full", "get_empty"])
def test_blocked_channel_operations_give_up_on_stop(op: str) -> None:
    ch = Channel("c", 1)
    stop = threading.Event()
    if op == "put_full":
        ch.put(0)
    raised: list[BaseException] = []

    def blocked() -> None:
        try:
            ch.put(1, stop) if op == "put_full" else ch.get(stop)
        except Stopped as exc:
            raised.append(exc)

    t = threading.Thread(target=blocked)
    t.start()
    stop.set()
    t.join(WATCHDOG_S)
    assert not t.is_alive() and len(raised) == 1


@pytest.mark.parametrize(
    "kwargs, error",
    [({"capacity": 0}, ValueError), ({"capacity": 2, "policy": "newest"}, ValueError)],
)
def test_channel_rejects_bad_settings(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        Channel("c", **kwargs)


def test_get_times_out() -> None:
    with pytest.raises(TimeoutError):
        Channel("c", 1).get(timeout=0.01)


# --- Pipeline ----------------------------------------------------------------------------------


def test_fan_out_delivers_everything_to_every_sink_and_closes_them() -> None:
    a, b = Collect("a"), Collect("b")
    source = Numbers(500)
    metrics, error = run_guarded(chain(source, a, b, capacity=2))
    assert error is None and metrics is not None
    assert a.items == b.items == [2 * i for i in range(500)]
    assert a.closed == b.closed == source.closed == 1
    assert metrics.frames == 500 and metrics.dropped == 0
    assert {s.name: s.count for s in metrics.stages} == {"numbers": 500, "double": 500, "a": 500,
                                                          "b": 500}
    assert all(c.max_depth <= c.capacity for c in metrics.channels)


@pytest.mark.parametrize(
    "where",
    ["source", "transform", "first_sink", "second_sink", "sink_open", "sink_close",
     "source_endless"],
)
def test_first_failure_stops_everything_and_names_the_stage(where: str) -> None:
    # capacity-1 queues and an endless source: producers are blocked on full queues when
    # a consumer fails, and consumers are blocked on empty queues when a producer fails.
    endless = where != "source"
    source = Numbers(None if endless else 100, fail_at=7 if where == "source" else None)
    a = Collect("a", fail_at=5 if where == "first_sink" else None,
                fail_on_close=where == "sink_close")
    b = Collect("b", fail_at=3 if where == "second_sink" else None,
                fail_on_open=where == "sink_open")
    pipe = chain(source, a, b, double_fail_at=9 if where == "transform" else None)
    if where in ("sink_close", "source_endless"):
        # nothing fails while running: stop from outside, like a timer or Ctrl-C would
        threading.Timer(0.2, pipe.stop).start()
    _, error = run_guarded(pipe)
    expected = {"source": "numbers", "transform": "double", "first_sink": "a",
                "second_sink": "b", "sink_open": "b", "sink_close": "a"}
    if where == "source_endless":
        assert error is None and pipe.stop_reason == "stopped"
    else:
        assert isinstance(error, StageError)
        assert error.stage == expected[where] and f"'{expected[where]}'" in str(error)
        assert isinstance(error.__cause__, Boom)
    assert a.closed == b.closed == source.closed == 1  # sinks always finalised


def test_stop_requested_by_a_stage_is_not_an_error() -> None:
    class Quitter(Collect):
        def process(self, item: Any) -> None:
            super().process(item)
            if len(self.items) == 3:
                raise StopRequested("user closed the window")

    q, other = Quitter("quit"), Collect("other")
    pipe = chain(Numbers(None), q, other)
    metrics, error = run_guarded(pipe)
    assert error is None and metrics is not None
    assert q.items == [0, 2, 4] and q.closed == other.closed == 1
    assert pipe.stop_reason == "quit asked to stop"


def test_keyboard_interrupt_finalises_sinks_then_propagates() -> None:
    sink = Collect("sink")
    pipe = chain(Numbers(None), sink)

    def interrupt(_: Metrics) -> None:
        raise KeyboardInterrupt

    _, error = run_guarded(pipe, on_tick=interrupt, tick_s=0.01)
    assert isinstance(error, KeyboardInterrupt)
    assert sink.closed == 1 and pipe.stop_reason == "interrupted"


def test_failing_tick_callback_stops_the_run() -> None:
    sink = Collect("sink")
    pipe = chain(Numbers(None), sink)

    def broken(_: Metrics) -> None:
        raise Boom("progress display failed")

    _, error = run_guarded(pipe, on_tick=broken, tick_s=0.01)
    assert isinstance(error, StageError) and error.stage == "on_tick" and sink.closed == 1


def test_drop_oldest_channel_in_a_pipeline_counts_what_a_slow_sink_missed() -> None:
    done = threading.Event()
    sink = Collect("slow", wait_for=done)  # starts reading only after the source finished
    pipe = Pipeline()
    ch = pipe.channel("frames", 4, "drop_oldest")
    pipe.add(Numbers(50, done=done), outputs=[ch])
    pipe.add(sink, input=ch)
    metrics, error = run_guarded(pipe)
    assert error is None and metrics is not None
    assert sink.items == [46, 47, 48, 49]
    assert metrics.dropped == 46 and metrics.channels[0].max_depth == 4
    d = metrics.as_dict()
    assert d["frames"] == 50 and d["dropped"] == 46 and d["channels"][0]["name"] == "frames"


def test_metrics_report_per_stage_percentiles() -> None:
    sink = Collect("sink")
    pipe = Pipeline()
    ch = pipe.channel("c", 8)
    pipe.add(IterableSource("src", range(100)), outputs=[ch])
    pipe.add(sink, input=ch)
    metrics, _ = run_guarded(pipe)
    assert metrics is not None
    s = metrics.stage("sink")
    assert s.count == 100 and 0.0 <= s.p50_ms <= s.p99_ms
    assert metrics.seconds > 0 and metrics.fps > 0


@pytest.mark.parametrize("problem", ["no_source", "duplicate_name", "foreign_channel"])
def test_bad_graphs_are_rejected(problem: str) -> None:
    pipe = Pipeline()
    ch = pipe.channel("c", 1)
    with pytest.raises(ValueError):
        if problem == "no_source":
            pipe.add(Collect("a"), input=ch)
            pipe.run()
        elif problem == "duplicate_name":
            pipe.add(Collect("a"), input=ch)
            pipe.add(Collect("a"), input=ch)
        else:
            pipe.add(Collect("a"), input=Channel("elsewhere", 1))


def test_a_stage_chain_runs_its_stages_in_order_on_one_thread() -> None:
    from tracker.runtime.stage import StageChain

    threads: list[int] = []
    closed: list[str] = []

    class Step(Stage):
        def __init__(self, name: str, fn: Any, fail_close: bool = False) -> None:
            self.name, self.fn, self.fail_close = name, fn, fail_close
            self.stop: threading.Event | None = None

        def attach(self, stop: threading.Event) -> None:
            self.stop = stop

        def process(self, item: Any) -> Any:
            threads.append(threading.get_ident())
            return self.fn(item)

        def close(self) -> None:
            closed.append(self.name)
            if self.fail_close:
                raise Boom(self.name)

    a, b = Step("a", lambda x: x + 1), Step("b", lambda x: None if x % 3 == 0 else 10 * x)
    c = Step("c", lambda x: -x)
    chain = StageChain([a, b, c])
    assert chain.name == "a+b+c"
    out = Collect("out")
    pipe = Pipeline()
    src, link = pipe.channel("src", 2), pipe.channel("link", 2)
    pipe.add(IterableSource("numbers", range(6)), outputs=[src])
    pipe.add(chain, input=src, outputs=[link])
    pipe.add(out, input=link)
    pipe.run()
    assert out.items == [-10, -20, -40, -50]  # 2 and 5 (+1: 3 and 6) stopped at b
    assert len(set(threads)) == 1 and a.stop is c.stop is not None
    assert closed == ["c", "b", "a"]
    timed = {m.name: m.count for m in pipe.metrics().stages}  # each stage's own timer
    assert timed == {"numbers": 6, "a": 6, "b": 6, "c": 4, "out": 4}

    closed.clear()
    failing = StageChain([Step("x", abs, fail_close=True), Step("y", abs, fail_close=True)])
    with pytest.raises(Boom, match="y"):
        failing.close()
    assert closed == ["y", "x"]  # both closed; the first error raised
    with pytest.raises(ValueError):
        StageChain([])


def test_the_stages_after_tracking_run_on_its_thread() -> None:
    from fractions import Fraction

    from tracker.api import assembly
    from tracker.config.schema import Config
    from tracker.io.specs import SourceInfo

    cfg = Config()
    info = SourceInfo("clip.mp4", "file", 64, 48, 30.0, Fraction(1, 30), False, None, 1, False)

    def names(one_thread: bool = True, **outputs: Any) -> list[str]:
        pipe = assembly.build_pipeline(
            cfg, IterableSource("decode", []), info, FunctionStage("track", lambda x: x),
            smooth=FunctionStage("smooth", lambda x: x), **outputs,
            **assembly.describe_stages(cfg), one_thread=one_thread)
        return [s.name for s in pipe.stages]

    assert "track+expression+smooth+describe" in names(jsonl=FunctionStage("jsonl", lambda x: None))
    assert "track+smooth" in names(writer=object())
    apart = names(one_thread=False, jsonl=FunctionStage("jsonl", lambda x: None))
    assert {"track", "expression", "smooth", "describe"} <= set(apart)
