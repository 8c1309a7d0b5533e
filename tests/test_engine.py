"""Engines: CPU backend parity with eager fp32, on-device decode maths, engine cache and stale
rebuilds (fake artifact), clear errors without CUDA / torch-tensorrt, landmarker buffers."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tracker.engines import registry as engine_mod
from tracker.engines.base import CUDA_HINT, TENSORRT_HINT, EngineError, weights_checksum
from tracker.engines.cache import (
    EngineCacheError,
    EngineSpec,
    cache_root,
    engine_name,
    engine_path,
    load_or_build,
    read_sidecar,
    sidecar_path,
    stale_reason,
)
from tracker.engines.cpu import cached_onnx
from tracker.engines.gpu import TensorRTEngine, torch_decode
from tracker.engines.openvino import bf16_supported
from tracker.engines.registry import create_engine, resolve_engine
from tracker.landmarker import Landmarker
from tracker.models import heatmap
from tracker.models.checkpoint import Checkpoint
from tracker.models.networks import VARIANTS, build_model
from tracker.models.preprocess import Preprocess
from tracker.types import Box

# Stated tolerances of every CPU backend against eager fp32 torch (NCHW, no channels_last):
LOGIT_RTOL = 1e-5  # max |logit error| / max |logit|
POINT_ATOL = 1e-3  # heatmap pixels, on maps whose peak beats the runner-up by 1e-3 or more

SMALL = replace(VARIANTS["rcn_lite"], size=32, widths=(8, 12, 16))


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = build_model(SMALL).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so folding is exercised
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
        m.head.weight.mul_(30.0)  # logits spread like a trained model's (peaks, not ties)
    return m


@pytest.fixture(autouse=True, scope="module")
def _cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:  # exported ONNX models go to a private cache
        mp.setenv("TRACKER_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def _inputs(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, SMALL.size, SMALL.size)).astype(
        np.float32)


def _clear_peaks(logits: np.ndarray, margin: float = 1e-3) -> np.ndarray:
    """Maps whose maximum beats the runner-up by ``margin`` (argmax is stable there)."""
    flat = np.sort(logits.reshape(logits.shape[0], logits.shape[1], -1), axis=-1)
    return flat[..., -1] - flat[..., -2] > margin


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "onnx", "openvino-fp32"])
@pytest.mark.parametrize("n", [1, 3])
def test_cpu_backends_match_eager_fp32(model: torch.nn.Module, backend: str, n: int) -> None:
    x = _inputs(n)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    eng = create_engine(model, SMALL.size, 1, backend)
    logits = eng.infer(x)
    assert logits.shape == ref.shape
    assert np.abs(logits - ref).max() <= LOGIT_RTOL * np.abs(ref).max()
    pts, conf = eng.predict(x)
    ref_pts, ref_conf = heatmap.decode(ref)
    ok = _clear_peaks(ref)
    assert ok.mean() > 0.8
    assert np.abs(pts - ref_pts)[ok].max() <= POINT_ATOL
    np.testing.assert_allclose(conf[ok], ref_conf[ok], atol=1e-4)


def test_auto_is_openvino_on_a_cpu_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert resolve_engine("auto") == "openvino"
    monkeypatch.setattr(engine_mod, "openvino_available", lambda: False)
    assert resolve_engine("auto") == "onnxruntime"


def test_openvino_precision_follows_the_cpu(model: torch.nn.Module) -> None:
    eng = create_engine(model, SMALL.size, 1, "openvino")
    assert eng.precision == ("bf16" if bf16_supported() else "fp32")
    assert create_engine(model, SMALL.size, 1, "openvino-fp32").precision == "fp32"


@pytest.mark.parametrize("n", [1, 3, 9])
def test_openvino_bf16_output_decodes_as_its_float32_logits(model: torch.nn.Module, n: int) -> None:
    """bf16 logits leave OpenVINO as bf16; predict() decodes them as decode() does infer()'s."""
    if not bf16_supported():
        pytest.skip("this CPU has no native bfloat16")
    eng = create_engine(model, SMALL.size, 1, "openvino")
    x = _inputs(n)
    logits = eng.infer(x)
    assert logits.dtype == np.float32
    assert eng._run(x).dtype.itemsize == 2  # the raw output really is 16-bit
    want_pts, want_conf = heatmap.decode(logits)
    pts, conf = eng.predict(x)
    assert np.array_equal(pts.view(np.uint32), want_pts.view(np.uint32))
    assert np.array_equal(conf.view(np.uint32), want_conf.view(np.uint32))


def test_openvino_compiles_each_batch_size_once(model: torch.nn.Module) -> None:
    eng = create_engine(model, SMALL.size, 1, "openvino-fp32")
    for n in (2, 1, 2, 3):
        assert eng.infer(_inputs(n)).shape == (n, SMALL.n_points, SMALL.size, SMALL.size)
    assert sorted(eng._requests) == [1, 2, 3]


# bf16 (OpenVINO's default where the CPU has native bfloat16) against eager fp32, stated on the
# default model over real val crops (heatmap pixels): measured mean 0.10, p99 0.50, NME +0.02.
BF16_MEAN_PX, BF16_P99_PX, BF16_NME_DELTA = 0.2, 1.0, 0.001


def test_bf16_openvino_stays_within_its_tolerance() -> None:
    val = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces68" / "val"
    if not val.is_dir():
        pytest.skip("needs ../shared/data/faces68/val")
    if not bf16_supported():
        pytest.skip("this CPU has no native bfloat16")
    from tracker.evaluation.metrics import nme
    from tracker.io.pts import load_folder
    from tracker.models.checkpoint import load_checkpoint
    from tracker.models.preprocess import preprocess_crops
    from tracker.training.data import face_crop

    ckpt = load_checkpoint(None)
    size = ckpt.net.size
    samples = load_folder(val, limit=120)
    pairs = [face_crop(s.image, s.points, size, None, None) for s in samples]
    x = preprocess_crops(np.stack([c for c, _ in pairs]), 1, False)
    truth = np.stack([p for _, p in pairs])
    with torch.no_grad():
        ref_pts, _ = heatmap.decode(ckpt.model.eval()(torch.from_numpy(x)).numpy())
    eng = create_engine(ckpt.model, size, 1, "openvino")
    assert eng.precision == "bf16"
    pts = np.concatenate([eng.predict(x[i : i + 1])[0] for i in range(len(x))])
    err = np.linalg.norm(pts - ref_pts, axis=-1)
    assert 0 < err.mean() <= BF16_MEAN_PX  # > 0: it really ran in reduced precision
    assert np.percentile(err, 99) <= BF16_P99_PX
    assert abs(nme(pts, truth).mean() - nme(ref_pts, truth).mean()) <= BF16_NME_DELTA


def test_unknown_engine_is_a_clear_error(model: torch.nn.Module) -> None:
    with pytest.raises(EngineError, match="unknown engine 'tpu'"):
        create_engine(model, SMALL.size, 1, "tpu")


# --- on-device decode maths (runs on the CPU here): windowed soft-argmax, as heatmap.decode ---


def _maps(kind: str) -> np.ndarray:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 9, 11)).astype(np.float32)
    if kind == "peaky":
        x[:, :, 4, 6] += 8.0
        x[:, :, 4, 5] += 5.0
        x[:, :, 3, 6] += 6.0
    elif kind == "border":
        x[0, 0, 0, 0] = 9.0
        x[0, 1, 8, 10] = 9.0
        x[0, 2, 0, 5] = 9.0
        x[0, 3, 4, 10] = 9.0
    elif kind == "ties":
        x[:, :, 2, 3] = 7.0
        x[:, :, 6, 1] = 7.0
    elif kind == "nonfinite":
        x[0, 0, 1, 1] = np.nan
        x[0, 1, 2, 2] = np.inf
        x[1, 2] = -np.inf
        x[1, 3, 5, 5] = -np.inf
    elif kind == "flat":
        x[:] = 0.0
    return x


def _assert_torch_decode_matches(x: np.ndarray) -> np.ndarray:
    """torch_decode within 1e-4 px (confidence 1e-5) of heatmap.decode; returns decode's points."""
    ref_pts, ref_conf = heatmap.decode(x)
    pts, conf = (t.numpy() for t in torch_decode(torch.from_numpy(x)))
    np.testing.assert_array_equal(np.isnan(pts), np.isnan(ref_pts))
    np.testing.assert_allclose(pts, ref_pts, atol=1e-4, equal_nan=True)
    np.testing.assert_allclose(conf, ref_conf, atol=1e-5)
    return ref_pts


@pytest.mark.parametrize("kind", ["random", "peaky", "border", "ties", "nonfinite", "flat"])
def test_torch_decode_matches_numba_decode(kind: str) -> None:
    _assert_torch_decode_matches(_maps(kind))


@pytest.mark.parametrize(("h", "w"), [(64, 64), (80, 80), (5, 7), (1, 9)])
def test_torch_decode_matches_numba_decode_on_gaussian_peaks(h: int, w: int) -> None:
    """Log-Gaussian peaks in the interior, on edges and in corners (window clipped), as in
    tests/test_heatmap.py; points within 1e-4 heatmap px of :func:`heatmap.decode`."""
    rng = np.random.default_rng(h * w)
    centres = [(0, 0), (w - 1, h - 1), (0, h - 1), (w - 1, 0), (w - 1, (h - 1) / 2),
               ((w - 1) / 3, 0), (1.4, 2.6), (w - 2.3, h - 1.8)]
    centres += [(rng.uniform(0, w - 1), rng.uniform(0, h - 1)) for _ in range(8)]
    xs, ys = np.arange(w), np.arange(h)[:, None]
    maps = [-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * s * s) + rng.uniform(-20, 20)
            for cx, cy in centres for s in (0.7, 1.0, 2.0)]
    x = np.stack(maps).astype(np.float32).reshape(2, -1, h, w)
    x += rng.standard_normal(x.shape).astype(np.float32) * 0.1
    assert np.isfinite(_assert_torch_decode_matches(x)).all()


def test_torch_decode_accepts_half_logits() -> None:
    x = _maps("peaky")
    pts, _ = torch_decode(torch.from_numpy(x).half())
    ref, _ = heatmap.decode(x.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(pts.numpy(), ref, atol=1e-3)


@pytest.mark.parametrize("n", [1, 4, 6, 9])
def test_fixed_batch_engine_pads_and_splits(model: torch.nn.Module, n: int) -> None:
    """The host side of the GPU engines (padding to the fixed batch, chunking, on-device
    decode) with a CPU stand-in for the compiled program."""
    calls = []

    def program(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return model(x)

    eng = TensorRTEngine(program, 4, 1, SMALL.size, torch.float32, device="cpu")
    x = _inputs(n, seed=n)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(eng.infer(x), ref, atol=LOGIT_RTOL * np.abs(ref).max())
    pts, conf = eng.predict(x)
    ref_pts, ref_conf = heatmap.decode(ref)
    ok = _clear_peaks(ref)
    assert np.abs(pts - ref_pts)[ok].max() <= POINT_ATOL
    np.testing.assert_allclose(conf[ok], ref_conf[ok], atol=1e-4)
    assert set(calls) == {(4, 1, SMALL.size, SMALL.size)}  # always the built shape
    assert len(calls) == 2 * -(-n // 4)


# --- engine cache and stale rebuilds (fake compiled artifact) --------------------------------

SPEC = EngineSpec(model="rcn_lite", size=64, channels=1, batch=8, precision="fp16",
                  backend="tensorrt", backend_version="10.3.0", device="NVIDIA Fake GPU",
                  capability="8.9", weights_sha256="a" * 64, runtime="torch x")
CONFIG = {"net": {"widths": (16, 32)}, "dkm": None}


class FakeCompiler:
    """Builds and loads 'engines' that are just bytes; counts builds."""

    def __init__(self, payload: bytes = b"compiled", passed: bool = True) -> None:
        self.payload = payload
        self.passed = passed
        self.builds = 0

    def build(self, path: Path) -> None:
        self.builds += 1
        path.write_bytes(self.payload)

    def load(self, path: Path) -> bytes:
        data = path.read_bytes()
        if not data.startswith(b"compiled"):
            raise ValueError("not an engine")
        return data

    def check(self, engine: bytes) -> dict[str, object]:
        return {"point_err_px_p99": 0.01, "passed": self.passed}

    def __call__(self, folder: Path | None, spec: EngineSpec = SPEC, config: dict = CONFIG,
                 force: bool = False) -> tuple[bytes, Path, bool]:
        return load_or_build(folder, spec, config, self.build, self.load, self.check, force=force)


def test_engine_is_built_once_then_loaded(tmp_path: Path) -> None:
    fake = FakeCompiler()
    engine, path, built = fake(tmp_path)
    assert built and engine == b"compiled" and fake.builds == 1
    assert path.name == engine_name(SPEC) + ".ep"
    side = read_sidecar(path)
    assert side is not None
    assert side["spec"] == asdict(SPEC)
    assert side["model_config"] == {"net": {"widths": [16, 32]}, "dkm": None}
    for key in ("built_at", "build_seconds", "accuracy", "artifact_sha256"):
        assert key in side
    _, path2, built2 = fake(tmp_path)
    assert not built2 and path2 == path and fake.builds == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, sidecar_path(path).name])


@pytest.mark.parametrize("field,value", [
    ("model", "rcn"), ("size", 80), ("channels", 3), ("batch", 32), ("precision", "fp32"),
    ("backend_version", "10.4.0"), ("device", "NVIDIA Other"), ("capability", "9.0"),
])
def test_engine_name_keys_every_build_parameter(field: str, value: object) -> None:
    assert engine_name(replace(SPEC, **{field: value})) != engine_name(SPEC)


def _tamper_sidecar(path: Path, **changes: object) -> None:
    side = json.loads(sidecar_path(path).read_text())
    for key, value in changes.items():
        if key in side["spec"]:
            side["spec"][key] = value
        else:
            side[key] = value
    sidecar_path(path).write_text(json.dumps(side))


STALE_CASES = {
    "weights changed": lambda p: None,  # handled below by a new spec
    "sidecar missing": lambda p: sidecar_path(p).unlink(),
    "sidecar corrupt": lambda p: sidecar_path(p).write_text("{not json"),
    "sidecar for another TensorRT": lambda p: _tamper_sidecar(p, backend_version="8.6.1"),
    "sidecar for another GPU": lambda p: _tamper_sidecar(p, device="NVIDIA Other"),
    "old format": lambda p: _tamper_sidecar(p, format=0),
    "model config changed": lambda p: _tamper_sidecar(p, model_config={"net": {}, "dkm": None}),
    "accuracy failed": lambda p: _tamper_sidecar(p, accuracy={"passed": False}),
    "artifact truncated": lambda p: p.write_bytes(b"compi"),
    "artifact replaced": lambda p: p.write_bytes(b"compiled but different"),
    "artifact deleted": lambda p: p.unlink(),
}


@pytest.mark.parametrize("case", sorted(STALE_CASES))
def test_stale_or_mismatched_engines_are_rebuilt(tmp_path: Path, case: str) -> None:
    fake = FakeCompiler()
    _, path, _ = fake(tmp_path)
    spec = SPEC
    if case == "weights changed":
        spec = replace(SPEC, weights_sha256="b" * 64)
    else:
        STALE_CASES[case](path)
    assert stale_reason(path, spec, CONFIG) is not None
    engine, path2, built = fake(tmp_path, spec)
    assert built and fake.builds == 2 and engine == b"compiled" and path2 == path
    assert stale_reason(path, spec, CONFIG) is None
    assert read_sidecar(path)["spec"]["weights_sha256"] == spec.weights_sha256


def test_unloadable_engine_is_rebuilt(tmp_path: Path) -> None:
    fake = FakeCompiler()
    _, path, _ = fake(tmp_path)
    calls = {"n": 0}

    def flaky_load(p: Path) -> bytes:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("deserialisation failed")
        return fake.load(p)

    _, _, built = load_or_build(tmp_path, SPEC, CONFIG, fake.build, flaky_load, fake.check)
    assert built and fake.builds == 2


def test_force_rebuilds_a_valid_engine(tmp_path: Path) -> None:
    fake = FakeCompiler()
    fake(tmp_path)
    _, _, built = fake(tmp_path, force=True)
    assert built and fake.builds == 2


@pytest.mark.parametrize("problem", ["accuracy", "build", "load"])
def test_failed_build_leaves_nothing_behind(tmp_path: Path, problem: str) -> None:
    fake = FakeCompiler(payload=b"garbage" if problem == "load" else b"compiled",
                        passed=problem != "accuracy")
    if problem == "build":
        def build(path: Path) -> None:
            path.write_bytes(b"half")
            raise RuntimeError("TensorRT ran out of memory")
    else:
        build = fake.build
    with pytest.raises(EngineCacheError):
        load_or_build(tmp_path, SPEC, CONFIG, build, fake.load, fake.check)
    assert list(tmp_path.iterdir()) == []


def test_every_compiled_artefact_lands_under_tracker_cache(
    model: torch.nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRACKER_CACHE", str(tmp_path))
    _, onnx = cached_onnx(model, SMALL.size, 1, "key")
    assert onnx == tmp_path / "onnx" / "key.onnx" and onnx.is_file()
    assert engine_path(SPEC) == tmp_path / "tensorrt" / (engine_name(SPEC) + ".ep")
    _, path, built = FakeCompiler()(None)  # no folder given: the cache's
    assert built and path == engine_path(SPEC) and path.is_file()
    assert engine_path(SPEC, tmp_path / "elsewhere").parent == tmp_path / "elsewhere"


def test_cache_root_defaults_to_the_user_cache_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TRACKER_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "tracker"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")  # not absolute: ignored (XDG spec)
    assert cache_root() == tmp_path / "home" / ".cache" / "tracker"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == tmp_path / "home" / ".cache" / "tracker"


def test_weights_checksum_follows_the_weights(model: torch.nn.Module) -> None:
    other = build_model(SMALL).eval()
    other.load_state_dict(model.state_dict())
    assert weights_checksum(other) == weights_checksum(model)
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    assert weights_checksum(other) != weights_checksum(model)


# --- clear errors without CUDA / torch-tensorrt ----------------------------------------------


@pytest.mark.parametrize("cuda,trt,backend,hint", [
    (False, False, "tensorrt", TENSORRT_HINT),
    (True, False, "tensorrt", TENSORRT_HINT),  # a GPU but no torch-tensorrt
    (False, True, "tensorrt", TENSORRT_HINT),  # torch-tensorrt but no GPU
    (False, False, "cuda", CUDA_HINT),
])
def test_gpu_engines_fail_clearly_without_their_requirements(
    model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch, cuda: bool, trt: bool, backend: str,
    hint: str,
) -> None:
    monkeypatch.setattr(engine_mod, "cuda_available", lambda: cuda)
    monkeypatch.setitem(sys.modules, "torch_tensorrt", object() if trt else None)
    with pytest.raises(EngineError) as info:
        create_engine(model, SMALL.size, 1, backend)
    assert str(info.value) == hint
    assert "\n" not in hint


def test_tensorrt_hint_says_how_to_install() -> None:
    assert "pip install 'tracker[tensorrt]'" in TENSORRT_HINT


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("backend", ["tensorrt", "cuda"])
def test_real_machine_without_cuda_refuses_gpu_engines(model: torch.nn.Module, backend: str) -> None:
    with pytest.raises(EngineError, match="NVIDIA GPU"):
        create_engine(model, SMALL.size, 1, backend)


# --- landmarker buffers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def landmarker(model: torch.nn.Module) -> Landmarker:
    ckpt = Checkpoint(model, SMALL, None, {})
    return Landmarker(ckpt, create_engine(model, SMALL.size, 1, "onnxruntime"))


def _image() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (120, 160, 3), dtype=np.uint8)


BOXES = [Box(20, 30, 60, 80), Box(90, 10, 140, 70), Box(-10, 60, 30, 130)]


@pytest.mark.parametrize("order", [(1, 3, 2), (3, 1), (2, 2, 1)])
def test_landmarker_results_do_not_depend_on_batching(landmarker: Landmarker,
                                                      order: tuple[int, ...]) -> None:
    image = _image()
    single = [landmarker.predict(image, [b], [0.2])[0] for b in BOXES]
    kept = []
    for n in order:
        kept.append(landmarker.predict(image, BOXES[:n], [0.2] * n))
    for preds in kept:  # earlier results are not overwritten by later calls
        for p, ref in zip(preds, single, strict=False):
            np.testing.assert_allclose(p.points, ref.points, atol=1e-3)
            np.testing.assert_allclose(p.confidence, ref.confidence, atol=1e-5)
            assert p.presence == pytest.approx(float(ref.confidence.mean()), abs=1e-6)
            assert (p.box.x0, p.box.y1) == (float(p.points[:, 0].min()), float(p.points[:, 1].max()))


def test_landmarker_with_no_boxes_returns_nothing(landmarker: Landmarker) -> None:
    assert landmarker.predict(_image(), []) == []


@pytest.mark.parametrize("shape", [(1, 32, 32, 3), (4, 32, 32, 3), (2, 64, 64, 3)])
def test_fast_grey_preprocess_matches_numpy(shape: tuple[int, ...]) -> None:
    crops = np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)
    crops[0] = 9  # a flat crop hits the std floor
    x = crops.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    x = x[:, None]
    ref = (x - x.mean(axis=(1, 2, 3), keepdims=True)) / np.maximum(
        x.std(axis=(1, 2, 3), keepdims=True), 4.0)
    out = np.full((shape[0], 1, shape[1], shape[2]), np.nan, np.float32)
    got = Preprocess(shape[1], 1, False)(crops, out=out)
    assert got is out
    np.testing.assert_allclose(got, ref, atol=2e-5)


def test_auto_runs_a_fused_model_on_onnxruntime(model: torch.nn.Module) -> None:
    if torch.cuda.is_available():
        pytest.skip("auto picks a GPU engine here")
    from tracker.models.networks import DKM, DKMConfig, Fused

    fused = Fused(model, DKM(DKMConfig(map_size=8, width=8, dilations=(1, 2)))).eval()
    assert create_engine(fused, SMALL.size, 1, "auto").name == "onnxruntime"
    assert create_engine(model, SMALL.size, 1, "auto").name == "openvino"


def test_warmup_compiles_every_batch_size_up_to_max_faces(model: torch.nn.Module) -> None:
    eng = create_engine(model, SMALL.size, 1, "openvino-fp32")
    Landmarker(Checkpoint(model, SMALL, None, {}), eng).warmup(4)
    assert sorted(eng._requests) == [1, 2, 3, 4]
