"""The measured CPU engine choice (``--engine auto``): cache key and reuse, the accuracy gate,
batch plans never slower per face than one face at a time, the torch-free warm start, and the
landmarker's fused post-processing kernel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tracker.engines import tuning
from tracker.engines.cpu import OnnxRuntimeEngine
from tracker.engines.tuning import (
    Candidate,
    Plan,
    PlannedEngine,
    make_plan,
    record_path,
    tune,
    tuned_engine,
    tuning_key,
)
from tracker.models import heatmap

ROOT = Path(__file__).resolve().parents[1]
ORT = Candidate("onnxruntime", {"threads": 1, "level": "all"})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, int]:
    """A small random RCN saved as weights, its ONNX export and input size."""
    import torch

    from tracker.engines.cpu import onnx_bytes
    from tracker.models.checkpoint import save_checkpoint
    from tracker.models.networks import VARIANTS, build_model

    torch.manual_seed(0)
    net = replace(VARIANTS["rcn_lite"], size=32, widths=(8, 12, 16))
    model = build_model(net).eval()
    with torch.no_grad():
        model.head.weight.mul_(30.0)  # peaked maps, like a trained model's
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_checkpoint(path, model, net, None, {"preprocess": {"lcn": False}})
    return path, onnx_bytes(model, net.size, 1), net.size


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKER_CACHE", str(tmp_path / "cache"))


def _inputs(size: int, n: int = 12) -> np.ndarray:
    from tracker.engines.check_crops import check_crops
    from tracker.models.preprocess import preprocess_crops

    crops, _ = check_crops(size, n)
    return preprocess_crops(crops, 1, False)


# --- the cache key and reuse -------------------------------------------------------------------


def test_tuning_key_names_the_cpu_its_flags_the_libraries_and_the_model() -> None:
    key = tuning_key("ab" * 32)
    assert key["model_sha256"] == "ab" * 32 and key["format"] == tuning.TUNING_FORMAT
    assert key["cpu"] and key["cpus"] >= 1 and isinstance(key["flags"], list)
    assert set(key["libraries"]) == {"openvino", "onnxruntime"}
    path = record_path("tiny", key)
    assert path.parent == Path(os.environ["TRACKER_CACHE"]) / "tuning"
    for field, value in [("cpu", "Other CPU"), ("flags", ["avx2"]), ("cpus", 64),
                         ("libraries", {"openvino": "0", "onnxruntime": "0"}),
                         ("model_sha256", "cd" * 32), ("threads", 1)]:
        assert record_path("tiny", {**key, field: value}) != path, field


def _cheap_rounds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Round 1 = ONNX Runtime at two levels, no round 2; counts the tunings."""
    calls: list[int] = []
    real = tuning.tune

    def counting(*args: object, **kwargs: object) -> dict:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(tuning, "first_round", lambda threads=None: [
        ORT, Candidate("onnxruntime", {"threads": 1, "level": "basic"})])
    monkeypatch.setattr(tuning, "second_round", lambda best, threads=None: [])
    monkeypatch.setattr(tuning, "tune", counting)
    return calls


def test_second_load_reuses_the_cached_choice(tiny: tuple[Path, bytes, int],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _, onnx, size = tiny
    calls = _cheap_rounds(monkeypatch)
    asked: list[int] = []

    def inputs() -> tuple[np.ndarray, str]:
        asked.append(1)
        return _inputs(size), "drawn"

    first = tuned_engine(onnx, "f" * 64, "tiny", inputs, log=None)
    assert calls == [1] and asked == [1] and first.record["reused"] is False
    path = Path(first.record["path"])
    saved = json.loads(path.read_text())
    assert saved["key"] == tuning_key("f" * 64) and "_engine" not in saved
    second = tuned_engine(onnx, "f" * 64, "tiny", inputs, log=None)
    assert calls == [1] and asked == [1], "the second load measured again"
    assert second.record["reused"] is True and second.choice == first.choice
    x = _inputs(size, 3)
    np.testing.assert_array_equal(second.predict(x)[0], first.predict(x)[0])
    tuned_engine(onnx, "f" * 64, "tiny", inputs, retune=True, log=None)
    assert calls == [1, 1]
    monkeypatch.setattr(tuning, "library_versions", lambda: {"openvino": "9", "onnxruntime": "9"})
    tuned_engine(onnx, "f" * 64, "tiny", inputs, log=None)  # another key: measured again
    assert calls == [1, 1, 1]


def test_a_cached_choice_that_cannot_be_built_is_measured_again(
    tiny: tuple[Path, bytes, int], monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, onnx, size = tiny
    calls = _cheap_rounds(monkeypatch)
    eng = tuned_engine(onnx, "e" * 64, "tiny", lambda: (_inputs(size), "drawn"), log=None)
    path = Path(eng.record["path"])
    record = json.loads(path.read_text())
    record["choice"] = {"backend": "no-such-backend", "options": {}, "label": "x"}
    path.write_text(json.dumps(record))
    tuned_engine(onnx, "e" * 64, "tiny", lambda: (_inputs(size), "drawn"), log=None)
    assert calls == [1, 1]


# --- the accuracy gate -------------------------------------------------------------------------


class _FastButWrong:
    """An engine that answers at once with points shifted by 2 heatmap pixels."""

    name = "wrong"

    def __init__(self, onnx: bytes) -> None:
        self._ref = OnnxRuntimeEngine(onnx)
        self._cache: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self._ref.infer(batch)

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = batch.tobytes()
        if key not in self._cache:
            pts, conf = self._ref.predict(batch)
            self._cache[key] = (pts + 2.0, conf)
        return self._cache[key]


def test_the_accuracy_gate_rejects_a_fast_wrong_candidate(tiny: tuple[Path, bytes, int]) -> None:
    _, onnx, size = tiny
    wrong = Candidate("fake", {"kind": "wrong"}, make=_FastButWrong)
    record = tune(onnx, _inputs(size), candidates=[wrong, ORT], batches=(2,), seconds=0.05)
    rows = {r["backend"]: r for r in record["candidates"]}
    assert rows["fake"]["passed"] is False
    assert rows["fake"]["accuracy"]["1"]["p99"] == pytest.approx(2 * 2 ** 0.5, abs=1e-3)
    assert "ms_per_call" not in rows["fake"]  # a rejected candidate is not even timed
    assert rows["onnxruntime"]["passed"] is True
    assert record["choice"]["backend"] == "onnxruntime"
    assert isinstance(record.pop("_engine"), OnnxRuntimeEngine)


def test_no_passing_candidate_is_an_engine_error(tiny: tuple[Path, bytes, int]) -> None:
    from tracker.engines.base import EngineError

    _, onnx, size = tiny
    wrong = Candidate("fake", {}, make=_FastButWrong)
    broken = Candidate("fake", {"broken": True}, make=lambda onnx: 1 / 0)
    with pytest.raises(EngineError, match="no CPU engine passed"):
        tune(onnx, _inputs(size), candidates=[wrong, broken], seconds=0.05)


def test_more_threads_must_win_by_the_margin() -> None:
    one, two = Candidate("x", {"threads": 1}), Candidate("x", {"threads": 2})
    rows = [{"candidate": two, "passed": True, "ms_per_call": {"1": 0.9}},
            {"candidate": one, "passed": True, "ms_per_call": {"1": 1.0}}]
    assert tuning._pick(rows)["candidate"] is one  # 10 % faster is not enough
    rows[0]["ms_per_call"]["1"] = 0.5
    assert tuning._pick(rows)["candidate"] is two


# --- batch plans -------------------------------------------------------------------------------


@pytest.mark.parametrize("table", [
    {1: 1.0, 2: 2.6, 4: 5.5, 8: 12.0, 16: 30.0},  # batching slower per face (this Xeon, 1t)
    {1: 1.0, 2: 1.6, 4: 2.8, 8: 5.0, 16: 9.0},  # batching faster
    {1: 1.0, 2: 1.9, 4: 4.4, 8: 7.5, 16: 20.0},  # mixed
    {1: 1.0},
])
def test_plans_are_never_slower_per_face_than_batch_one(table: dict[int, float]) -> None:
    plan = make_plan(table)
    for n in range(1, 3 * plan.limit + 1):
        chunks = plan.chunks(n)
        assert sum(chunks) == n and set(chunks) <= set(table)
        assert plan.ms(n) / n <= table[1] + 1e-9, (n, chunks)
    assert Plan.from_json(json.loads(json.dumps(plan.to_json()))).chunks(37) == plan.chunks(37)


def test_batching_slower_per_face_runs_faces_one_by_one() -> None:
    plan = make_plan({1: 1.0, 2: 2.6, 4: 5.5, 8: 12.0})
    assert plan.chunks(5) == (1, 1, 1, 1, 1) and plan.sizes(8) == [1]


def test_random_plans_keep_the_property() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        table = {1: 1.0, **{b: float(b * rng.uniform(0.3, 2.0)) for b in (2, 4, 8, 16)}}
        plan = make_plan(table)
        assert all(plan.ms(n) <= n * table[1] + 1e-9 for n in range(1, plan.limit + 1))


def test_a_planned_engine_runs_the_chunks_and_keeps_the_order(
    tiny: tuple[Path, bytes, int],
) -> None:
    _, onnx, size = tiny
    base = OnnxRuntimeEngine(onnx)
    calls: list[int] = []
    real = base.predict

    def spy(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append(len(batch))
        return real(batch)

    base.predict = spy  # type: ignore[method-assign]
    eng = PlannedEngine(base, make_plan({1: 1.0, 2: 1.5, 4: 5.0}))
    x = _inputs(size, 7)
    pts, conf = eng.predict(x)
    assert calls == [2, 2, 2, 1]
    ref_pts, ref_conf = heatmap.decode(base.infer(x))
    np.testing.assert_allclose(pts, ref_pts, atol=1e-4)
    np.testing.assert_allclose(conf, ref_conf, atol=1e-5)
    assert eng.infer(x).shape == (7, 68, size, size)
    assert eng.warm_sizes(7) == [1, 2]


# --- the warm start imports no torch -----------------------------------------------------------


WARM = """
import sys
import numpy as np
from tracker.landmarker import load_landmarker
from tracker.types import Box
lm = load_landmarker(sys.argv[1], sys.argv[2])
faces = lm.predict(np.zeros((96, 96, 3), np.uint8), [Box(20, 20, 70, 70)])
assert len(faces) == 1 and faces[0].points.shape == (68, 2)
if sys.argv[2] == "auto":
    from tracker import Tracker
    with Tracker.from_config(None, weights=sys.argv[1]) as t:
        t.process(np.zeros((96, 128, 3), np.uint8))
print("TORCH" if "torch" in sys.modules else "NO-TORCH", lm.engine.name)
"""


@pytest.mark.parametrize("engine", ["auto", "onnxruntime", "openvino"])
def test_a_warm_cpu_start_imports_no_torch(tiny: tuple[Path, bytes, int], tmp_path: Path,
                                           engine: str) -> None:
    weights = tiny[0]
    env = {**os.environ, "TRACKER_CACHE": str(tmp_path / "warm")}
    cmd = [sys.executable, "-c", WARM, str(weights), engine]
    cold = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert cold.returncode == 0, cold.stderr
    assert cold.stdout.split()[0] == "TORCH"  # the export needed it
    warm = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert warm.returncode == 0, warm.stderr
    assert warm.stdout.split()[0] == "NO-TORCH", warm.stdout
    assert "measuring" not in warm.stderr  # the choice came from the cache


# --- the landmarker's post-processing kernel ---------------------------------------------------


def test_fused_post_processing_matches_the_numpy_formulas() -> None:
    from tracker.landmarker import _to_frame

    rng = np.random.default_rng(3)
    n, k = 3, 68
    points = rng.uniform(0, 80, (n, k, 2)).astype(np.float32)
    points[2, 5] = np.nan
    offset = rng.normal(0, 0.2, (k, 2)).astype(np.float32)
    inv = np.concatenate([rng.normal(0, 2, (n, 2, 2)), rng.uniform(0, 500, (n, 2, 1))], axis=2)
    conf = rng.random((n, k)).astype(np.float32) ** 3
    out, box, presence = np.empty((n, k, 2), np.float32), np.empty((n, 4)), np.empty(n, np.float32)
    _to_frame(points, offset, inv, conf, out, box, presence)
    p = points + offset
    ref = (np.matmul(p, inv[:, :, :2].transpose(0, 2, 1)) + inv[:, None, :, 2]).astype(np.float32)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-4)
    lo, hi = ref.min(axis=1), ref.max(axis=1)
    np.testing.assert_array_equal(box, np.concatenate([lo, hi], axis=1))
    np.testing.assert_array_equal(presence, conf.mean(axis=1))  # bit for bit


def test_block_sum_is_numpys_pairwise_sum() -> None:
    from tracker.landmarker import _block_sum

    rng = np.random.default_rng(4)
    for n in (1, 7, 8, 9, 16, 67, 68, 100, 128):
        for _ in range(50):
            a = (rng.random(n) ** rng.uniform(0.5, 4)).astype(np.float32)
            assert _block_sum(a) == a.sum(), n
