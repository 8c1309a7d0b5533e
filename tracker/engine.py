"""Inference backends behind one small interface: logits = engine.infer(batch).

``auto`` picks TensorRT when CUDA and torch-tensorrt are present, else ONNX Runtime on the CPU
(the fastest CPU path we measured for the lite model), else eager torch.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

ENGINES = ("auto", "torch", "onnxruntime", "onnx", "tensorrt")


class EngineError(RuntimeError):
    """An engine that cannot be built or used here, with a one-line reason."""


class Engine(Protocol):
    """Maps a float32 batch ``(N, C, S, S)`` to logits ``(N, K, S, S)``."""

    name: str

    def infer(self, batch: np.ndarray) -> np.ndarray: ...


class TorchEngine:
    """Eager PyTorch, channels_last, inference mode."""

    name = "torch"

    def __init__(self, model: nn.Module, threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.model = model.eval().to(memory_format=torch.channels_last)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
            return self.model(x).contiguous().numpy()


def onnx_bytes(model: nn.Module, size: int, channels: int) -> bytes:
    """Export a model to ONNX with a dynamic batch axis."""
    buf = io.BytesIO()
    dummy = torch.zeros(1, channels, size, size)
    torch.onnx.export(model.eval(), (dummy,), buf, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}}, opset_version=17,
                      dynamo=False)
    return buf.getvalue()


def cache_dir() -> Path:
    """Where exported engines are cached (``TRACKER_CACHE`` or ~/.cache/tracker)."""
    root = os.environ.get("TRACKER_CACHE") or Path.home() / ".cache" / "tracker"
    return Path(root)


class OnnxRuntimeEngine:
    """ONNX Runtime CPU session over the exported model (cached by weights checksum)."""

    name = "onnxruntime"

    def __init__(self, model: nn.Module, size: int, channels: int, key: str,
                 threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EngineError("onnxruntime is not installed: pip install onnxruntime") from exc
        path = cache_dir() / f"{key}.onnx"
        if path.exists():
            data = path.read_bytes()
        else:
            data = onnx_bytes(model, size, channels)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(data)
                tmp.replace(path)
            except OSError:
                pass  # a read-only cache only costs the export time
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or min(2, os.cpu_count() or 1)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            path.unlink(missing_ok=True)
            raise EngineError(f"cannot load ONNX engine {path}: {exc}; it was removed, rerun") from exc
        self.input = self.session.get_inputs()[0].name

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: np.ascontiguousarray(batch, np.float32)})[0]


def tensorrt_available() -> bool:
    """True when CUDA and torch-tensorrt can both be used."""
    if not torch.cuda.is_available():
        return False
    try:
        import torch_tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def model_key(model: nn.Module, tag: str) -> str:
    """A checksum of the weights and a tag, to key cached engines."""
    h = hashlib.sha256(tag.encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def create_engine(model: nn.Module, size: int, channels: int, engine: str = "auto",
                  threads: int | None = None) -> Engine:
    """Build the requested backend for a landmark model."""
    if engine == "onnx":
        engine = "onnxruntime"
    if engine not in ENGINES:
        raise EngineError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "tensorrt" or (engine == "auto" and tensorrt_available()):
        if not tensorrt_available():
            raise EngineError("--engine tensorrt needs a CUDA GPU and torch-tensorrt: "
                              "pip install 'tracker[tensorrt]' on a CUDA machine")
        raise EngineError("the TensorRT engine is not built yet in this version; "
                          "use --engine onnxruntime or torch")
    if engine in ("auto", "onnxruntime"):
        try:
            key = model_key(model, f"ort-{size}-{channels}-{torch.__version__}")
            return OnnxRuntimeEngine(model, size, channels, key, threads)
        except EngineError:
            if engine == "onnxruntime":
                raise
    return TorchEngine(model, threads)
