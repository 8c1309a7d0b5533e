"""Engine names -> backends: ``auto`` resolved for this machine, the chosen engine built.

Two entry points: :func:`create_engine` builds any engine from a torch module (``auto`` there
is the static rule: GPU engines, else OpenVINO, else ONNX Runtime); :func:`create_cpu_engine`
builds the ONNX-based CPU engines from a model's cached export without torch, and resolves
``auto`` to the measured choice of :mod:`tracker.engines.tuning`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tracker.engines.base import (
    CUDA_HINT,
    DEFAULT_MAX_BATCH,
    TENSORRT_HINT,
    Engine,
    EngineError,
    cuda_available,
    model_key,
    openvino_available,
    tensorrt_available,
)
from tracker.engines.cpu import OnnxRuntimeEngine, TorchEngine, cached_onnx
from tracker.engines.names import ENGINES

if TYPE_CHECKING:
    from torch import nn

    from tracker.engines.export import ModelFiles

CPU_ONNX_ENGINES = ("openvino", "openvino-fp32", "onnxruntime")  # built from an ONNX export


def _has_dkm(model: nn.Module) -> bool:
    """True for a fused RCN + denoising keypoint model."""
    from tracker.models.networks import Fused

    return isinstance(model, Fused)


def resolve_engine(engine: str) -> str:
    """The concrete backend ``engine`` means on this machine (``auto`` resolved)."""
    engine = "onnxruntime" if engine == "onnx" else engine
    if engine not in ENGINES:
        raise EngineError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "auto":
        if tensorrt_available():
            return "tensorrt"
        if cuda_available():
            return "cuda"
        return "openvino" if openvino_available() else "onnxruntime"
    return engine


def create_engine(model: nn.Module, size: int, channels: int, engine: str = "auto",
                  threads: int | None = None, *, max_batch: int = DEFAULT_MAX_BATCH,
                  precision: str = "fp16", name: str = "model",
                  config: dict[str, Any] | None = None,
                  engines_dir: str | Path | None = None) -> Engine:
    """Build the requested backend for a landmark model.

    GPU engines use ``max_batch``, ``precision`` ("fp16" or "fp32"), the model ``name`` and
    ``config`` (recorded with compiled engines) and ``engines_dir`` (where compiled engines are
    kept; default: the cache's ``tensorrt/`` folder, :func:`tracker.engines.cache.cache_dir`).
    """
    wanted = resolve_engine(engine)
    if wanted == "tensorrt" and not tensorrt_available():
        raise EngineError(TENSORRT_HINT)
    if wanted == "cuda" and not cuda_available():
        raise EngineError(CUDA_HINT)
    if wanted in ("tensorrt", "cuda"):
        from tracker.engines.gpu import create_gpu_engine

        return create_gpu_engine(wanted, model, size, channels, max_batch=max_batch,
                                 precision=precision, name=name, config=config or {},
                                 directory=engines_dir)
    if engine == "auto" and wanted == "openvino" and _has_dkm(model):
        # RCN + DKM, 100 val faces, ms/face: ONNX Runtime 2.0, OpenVINO fp32 2.8, bf16 4.0
        # (python benchmarks/dkm_occlusion.py ... --engine E); RCN alone is fastest on OpenVINO
        wanted = "onnxruntime"
    if wanted == "torch":
        return TorchEngine(model, threads)
    import torch

    key = model_key(model, f"ort-{size}-{channels}-{torch.__version__}")  # of the ONNX export
    if wanted.startswith("openvino"):
        from tracker.engines.openvino import OpenVinoEngine

        try:
            data, _ = cached_onnx(model, size, channels, key)
            return OpenVinoEngine(data, threads, "fp32" if wanted == "openvino-fp32" else "auto")
        except EngineError:
            if engine != "auto":
                raise
            wanted = "onnxruntime"
    if wanted == "onnxruntime":
        try:
            return OnnxRuntimeEngine.from_model(model, size, channels, key, threads)
        except EngineError:
            if engine != "auto":
                raise
    return TorchEngine(model, threads)


def _note(message: str) -> None:
    sys.stderr.write(f"note: {message}\n")
    sys.stderr.flush()


def create_cpu_engine(files: ModelFiles, engine: str = "auto", threads: int | None = None, *,
                      retune: bool = False, log: Callable[[str], None] | None = _note) -> Engine:
    """An ONNX-based CPU engine for a model's export (no torch): ``openvino`` (bf16 where the
    CPU has native bfloat16), ``openvino-fp32``, ``onnxruntime``, or ``auto``, the measured
    choice (tuned on first use on this machine; ``retune`` measures again)."""
    wanted = "onnxruntime" if engine == "onnx" else engine
    if wanted == "auto":
        return _tuned(files, threads, retune, log)
    if wanted not in CPU_ONNX_ENGINES:
        raise EngineError(f"{engine!r} is not an ONNX-based CPU engine")
    if wanted == "onnxruntime":
        return OnnxRuntimeEngine(files.onnx, threads, path=files.onnx_path)
    from tracker.engines.openvino import OpenVinoEngine

    return OpenVinoEngine(files.onnx, threads, "fp32" if wanted == "openvino-fp32" else "auto")


def _tuned(files: ModelFiles, threads: int | None, retune: bool,
           log: Callable[[str], None] | None) -> Engine:
    from tracker.engines.tuning import tuned_engine

    def inputs() -> tuple[np.ndarray, str]:
        from tracker.engines.check_crops import check_crops

        crops, source = check_crops(files.info.net.size)
        return files.info.preprocess(crops), source

    return tuned_engine(files.onnx, files.onnx_sha256, files.name, inputs, threads=threads,
                        retune=retune, log=log)
