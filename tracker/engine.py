"""Inference backends behind one small interface.

Every engine maps a float32 batch ``(N, C, S, S)`` of normalised crops to landmark logits
(:meth:`Engine.infer`) and to decoded points + confidence (:meth:`Engine.predict`; CPU engines
decode with :mod:`tracker.heatmap`, GPU engines on the device).

``auto`` picks TensorRT when CUDA and torch-tensorrt are present, the CUDA-graph engine when
only CUDA is, else OpenVINO on the CPU (bf16 where the CPU has native bfloat16, see
:mod:`tracker.engine_openvino`), else ONNX Runtime, else eager torch.

CPU choice, measured for ``rcn_lite`` at batch 1 on this project's 2-core AVX512-BF16 EPYC
(``python benchmarks/engine_bench.py --accuracy``, quiet machine, wall p50 ms per call):
OpenVINO bf16 0.77; ONNX Runtime 1 thread 1.16 (2 threads 0.93, but in the pipeline the other
core decodes and encodes); OpenVINO fp32 1.30; eager channels_last 2.39; TorchScript freeze 2.60;
eager NCHW 3.30 (earlier, loaded: torch.compile 2.1-2.6). bf16 moves points by 0.10 px on average
(p99 0.50 px) and val NME 4.635 -> 4.650 %. int8 static quantisation in ONNX Runtime (QDQ,
per-channel) took 0.8 ms but raised val NME (5.61 -> 5.69 % on an earlier checkpoint).
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from tracker import heatmap
from tracker.config import ENGINES

TENSORRT_HINT = (
    "the TensorRT engine needs an NVIDIA GPU with CUDA and torch-tensorrt: on a CUDA machine "
    "run pip install 'tracker[tensorrt]' (GPU without TensorRT: --engine cuda; CPU: --engine "
    "auto or openvino)"
)
CUDA_HINT = ("--engine cuda needs an NVIDIA GPU and a CUDA build of torch "
             "(on the CPU use --engine auto or openvino)")
ORT_THREADS = 1  # see the module docstring
DEFAULT_MAX_BATCH = 8  # fixed batch of GPU engines (more faces run in several calls)


class EngineError(RuntimeError):
    """An engine that cannot be built or used here, with a one-line reason."""


class Engine(Protocol):
    """A landmark model ready to run on one device."""

    name: str

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 ``(N, C, S, S)`` -> logits ``(N, K, S, S)`` (float32 or float16)."""
        ...

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``(N, C, S, S)`` -> points ``(N, K, 2)`` in heatmap pixels, confidence ``(N, K)``."""
        ...


class HostDecode:
    """Mixin: decode the logits of :meth:`infer` on the CPU (Numba kernels)."""

    def infer(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return heatmap.decode(self.infer(batch))


class TorchEngine(HostDecode):
    """Eager PyTorch on the CPU, channels_last, inference mode.

    ``threads`` sets torch's (process-wide) intra-op thread count when given.
    """

    name = "torch"

    def __init__(self, model: nn.Module, threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.model = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, np.float32))
            x = x.contiguous(memory_format=torch.channels_last)
            return self.model(x).contiguous().numpy()


def onnx_bytes(model: nn.Module, size: int, channels: int) -> bytes:
    """Export a model to ONNX with a dynamic batch axis."""
    buf = io.BytesIO()
    dummy = torch.zeros(1, channels, size, size)
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated, not broken
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model.eval(), (dummy,), buf, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}},
                          opset_version=17, dynamo=False)
    return buf.getvalue()


def cache_dir() -> Path:
    """Where exported engines are cached (``TRACKER_CACHE`` or ~/.cache/tracker)."""
    root = os.environ.get("TRACKER_CACHE") or Path.home() / ".cache" / "tracker"
    return Path(root)


def cached_onnx(model: nn.Module, size: int, channels: int, key: str) -> tuple[bytes, Path]:
    """The model's ONNX export, from the cache when present (written there otherwise)."""
    path = cache_dir() / f"{key}.onnx"
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
    """ONNX Runtime CPU session over the exported model (cached by weights checksum).

    Sequential execution, all graph optimisations (NCHWc convolutions, fused BN + ReLU),
    ``threads`` intra-op threads (default :data:`ORT_THREADS`) that do not spin.
    """

    name = "onnxruntime"

    def __init__(self, model: nn.Module, size: int, channels: int, key: str,
                 threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EngineError("onnxruntime is not installed: pip install onnxruntime") from exc
        data, path = cached_onnx(model, size, channels, key)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or ORT_THREADS
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            path.unlink(missing_ok=True)
            raise EngineError(f"cannot load ONNX engine {path}: {exc}; it was removed, rerun") from exc
        self.input = self.session.get_inputs()[0].name

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: np.ascontiguousarray(batch, np.float32)})[0]


def cuda_available() -> bool:
    """True when torch can use a CUDA GPU."""
    return torch.cuda.is_available()


def openvino_available() -> bool:
    """True when the OpenVINO runtime can be imported."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def tensorrt_available() -> bool:
    """True when CUDA and torch-tensorrt can both be used."""
    if not cuda_available():
        return False
    try:
        import torch_tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def weights_checksum(model: nn.Module) -> str:
    """sha256 over the model's state dict (names, dtypes, shapes and values)."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def model_key(model: nn.Module, tag: str) -> str:
    """A checksum of the weights, the modules' configs (e.g. the DKM fusion weight) and a tag."""
    configs = ";".join(repr(m.cfg) for m in model.modules() if hasattr(m, "cfg"))
    return hashlib.sha256(f"{tag}:{configs}:{weights_checksum(model)}".encode()).hexdigest()[:16]


def _has_dkm(model: nn.Module) -> bool:
    """True for a fused RCN + denoising keypoint model."""
    from tracker.model import Fused

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
    ``config`` (recorded with compiled engines) and ``engines_dir`` (default ``engines/``).
    """
    wanted = resolve_engine(engine)
    if wanted == "tensorrt" and not tensorrt_available():
        raise EngineError(TENSORRT_HINT)
    if wanted == "cuda" and not cuda_available():
        raise EngineError(CUDA_HINT)
    if wanted in ("tensorrt", "cuda"):
        from tracker.engine_gpu import create_gpu_engine

        return create_gpu_engine(wanted, model, size, channels, max_batch=max_batch,
                                 precision=precision, name=name, config=config or {},
                                 directory=engines_dir)
    if engine == "auto" and wanted == "openvino" and _has_dkm(model):
        # RCN + DKM, 100 val faces, ms/face: ONNX Runtime 2.0, OpenVINO fp32 2.8, bf16 4.0
        # (python benchmarks/dkm_occlusion.py ... --engine E); RCN alone is fastest on OpenVINO
        wanted = "onnxruntime"
    if wanted == "torch":
        return TorchEngine(model, threads)
    key = model_key(model, f"ort-{size}-{channels}-{torch.__version__}")  # of the ONNX export
    if wanted.startswith("openvino"):
        from tracker.engine_openvino import OpenVinoEngine

        try:
            data, _ = cached_onnx(model, size, channels, key)
            return OpenVinoEngine(data, threads, "fp32" if wanted == "openvino-fp32" else "auto")
        except EngineError:
            if engine != "auto":
                raise
            wanted = "onnxruntime"
    if wanted == "onnxruntime":
        try:
            return OnnxRuntimeEngine(model, size, channels, key, threads)
        except EngineError:
            if engine != "auto":
                raise
    return TorchEngine(model, threads)
