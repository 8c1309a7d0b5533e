"""The engine interface, its errors, availability checks and model keys (torch is imported only
by the checks and keys that need it)."""

from __future__ import annotations

import hashlib
import os
import sys
from typing import TYPE_CHECKING, Protocol

import numpy as np

from tracker.errors import EngineError  # noqa: F401 (re-exported)
from tracker.models import heatmap

if TYPE_CHECKING:
    from torch import nn

TENSORRT_HINT = (
    "the TensorRT engine needs an NVIDIA GPU with CUDA and torch-tensorrt: on a CUDA machine "
    "run pip install 'tracker[tensorrt]' (GPU without TensorRT: --engine cuda; CPU: --engine "
    "auto or openvino)"
)
CUDA_HINT = ("--engine cuda needs an NVIDIA GPU and a CUDA build of torch "
             "(on the CPU use --engine auto or openvino)")
ORT_THREADS = 1  # see the module docstring
DEFAULT_MAX_BATCH = 8  # fixed batch of GPU engines (more faces run in several calls)


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


def nvidia_driver_present() -> bool:
    """False when this machine certainly has no NVIDIA driver (Linux without ``/dev/nvidiactl``
    or ``/proc/driver/nvidia``, or macOS): then CUDA is known to be absent without importing torch."""
    if sys.platform == "darwin":
        return False
    if sys.platform.startswith("linux"):
        return os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia")
    return True  # elsewhere only torch can tell


def cuda_available() -> bool:
    """True when torch can use a CUDA GPU (torch is not imported where no NVIDIA driver is)."""
    if not nvidia_driver_present():
        return False
    try:
        import torch
    except ImportError:
        return False
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
    import torch

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
