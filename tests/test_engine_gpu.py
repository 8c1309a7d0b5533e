"""GPU engines (CUDA graphs, TensorRT) against eager fp32; skipped without CUDA / torch-tensorrt."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tracker.engines.cache import read_sidecar
from tracker.engines.registry import create_engine
from tracker.models import heatmap
from tracker.models.networks import VARIANTS, build_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
HAS_TRT = importlib.util.find_spec("torch_tensorrt") is not None
CFG = replace(VARIANTS["rcn_lite"], size=64)
# fp16 vs eager fp32 on random-weight models: logits within 2 % of their range, points within
# 0.5 heatmap px on maps with a clear peak; fp32 engines within 1e-3 of the range.
TOL = {"fp16": 2e-2, "fp32": 1e-3}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = build_model(CFG).eval()
    with torch.no_grad():
        m.head.weight.mul_(30.0)
    return m


def _check(eng: object, model: torch.nn.Module, n: int, precision: str) -> None:
    x = np.random.default_rng(n).standard_normal((n, 1, CFG.size, CFG.size)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    logits = eng.infer(x)
    span = float(ref.max() - ref.min())
    assert logits.shape == ref.shape
    assert np.abs(logits - ref).max() <= TOL[precision] * span
    pts, conf = eng.predict(x)
    ref_pts, _ = heatmap.decode(ref)
    flat = np.sort(ref.reshape(n, 68, -1), axis=-1)
    clear = flat[..., -1] - flat[..., -2] > 0.05 * span
    assert pts.shape == (n, 68, 2) and conf.shape == (n, 68)
    assert np.abs(pts - ref_pts)[clear].max() <= 0.5


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
@pytest.mark.parametrize("n", [1, 3, 8, 11])  # padded, full and split over two calls
def test_cuda_graph_engine_matches_eager(model: torch.nn.Module, precision: str, n: int) -> None:
    eng = create_engine(model, CFG.size, 1, "cuda", max_batch=8, precision=precision)
    _check(eng, model, n, precision)


@pytest.mark.skipif(not HAS_TRT, reason="needs torch-tensorrt")
@pytest.mark.parametrize("precision", ["fp16"])
def test_tensorrt_engine_is_built_cached_and_matches_eager(
    model: torch.nn.Module, tmp_path: Path, precision: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracker.engines import gpu as engine_gpu

    # a random-weight model has no trained peaks: check its build on logits, not on faces
    x = np.random.default_rng(0).standard_normal((16, 1, CFG.size, CFG.size)).astype(np.float32)
    monkeypatch.setattr(engine_gpu, "check_inputs", lambda size, channels: (x, "synthetic: 16"))
    eng = create_engine(model, CFG.size, 1, "tensorrt", max_batch=4, precision=precision,
                        name="tiny", config={"net": {}}, engines_dir=tmp_path)
    _check(eng, model, 5, precision)
    side = read_sidecar(eng.path)
    assert side is not None and side["accuracy"]["passed"]
    again = create_engine(model, CFG.size, 1, "tensorrt", max_batch=4, precision=precision,
                          name="tiny", config={"net": {}}, engines_dir=tmp_path)
    assert again.path == eng.path and read_sidecar(eng.path)["built_at"] == side["built_at"]
