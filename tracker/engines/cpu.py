"""CPU engines: eager torch and ONNX Runtime over a cached ONNX export (torch is imported only
by the torch engine and the export)."""

from __future__ import annotations

import copy
import io
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tracker.engines.base import ORT_THREADS, EngineError, HostDecode
from tracker.engines.cache import cache_dir

if TYPE_CHECKING:
    from torch import nn

# ONNX Runtime graph optimisation levels by name (the tuner tries them; "all" is the default)
ORT_LEVELS = ("all", "extended", "basic")


class TorchEngine(HostDecode):
    """Eager PyTorch on the CPU, channels_last, inference mode.

    ``threads`` sets torch's (process-wide) intra-op thread count when given.
    """

    name = "torch"

    def __init__(self, model: nn.Module, threads: int | None = None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.model = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, np.float32))
            x = x.contiguous(memory_format=torch.channels_last)
            return self.model(x).contiguous().numpy()


def onnx_bytes(model: nn.Module, size: int, channels: int) -> bytes:
    """Export a model to ONNX with a dynamic batch axis."""
    import torch

    buf = io.BytesIO()
    dummy = torch.zeros(1, channels, size, size)
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated, not broken
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model.eval(), (dummy,), buf, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}},
                          opset_version=17, dynamo=False)
    return buf.getvalue()


def cached_onnx(model: nn.Module, size: int, channels: int, key: str) -> tuple[bytes, Path]:
    """The model's ONNX export, from the cache (``cache_dir("onnx")``) when present (written
    there otherwise)."""
    path = cache_dir("onnx") / f"{key}.onnx"
    if path.exists():
        return path.read_bytes(), path
    data = onnx_bytes(model, size, channels)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError:
        pass  # a read-only cache only costs the export time
    return data, path


class OnnxRuntimeEngine(HostDecode):
    """ONNX Runtime CPU session over an ONNX export (bytes, or the file ``path`` they came from).

    Sequential execution, graph optimisation ``level`` (default "all": NCHWc convolutions,
    fused BN + ReLU), ``threads`` intra-op threads (default :data:`ORT_THREADS`) that do not spin.
    An export that cannot be loaded is deleted from the cache (``path``) and reported.
    """

    name = "onnxruntime"

    def __init__(self, onnx: bytes, threads: int | None = None, *, level: str = "all",
                 path: Path | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EngineError("onnxruntime is not installed: pip install onnxruntime") from exc
        if level not in ORT_LEVELS:
            raise EngineError(f"unknown ONNX Runtime optimisation level {level!r}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or ORT_THREADS
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        }[level]
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.threads, self.level = opts.intra_op_num_threads, level
        try:
            self.session = ort.InferenceSession(onnx, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            if path is not None:
                path.unlink(missing_ok=True)
            raise EngineError(f"cannot load ONNX engine {path or '(bytes)'}: {exc}; it was "
                              "removed, rerun") from exc
        self.input = self.session.get_inputs()[0].name

    @classmethod
    def from_model(cls, model: nn.Module, size: int, channels: int, key: str,
                   threads: int | None = None) -> OnnxRuntimeEngine:
        """A session over the model's cached export (:func:`cached_onnx`, keyed by ``key``)."""
        data, path = cached_onnx(model, size, channels, key)
        return cls(data, threads, path=path)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: np.ascontiguousarray(batch, np.float32)})[0]
