"""GPU engines: TensorRT (torch-tensorrt, dynamo IR) and a CUDA-graph engine without TensorRT.

Both run a fixed batch (``max_batch``; fewer faces are zero-padded, more run in several calls)
in fp16 by default, and decode the heatmaps on the device (:func:`torch_decode`, the same
windowed soft-argmax as :func:`tracker.models.heatmap.decode`) so only points and confidences cross
back to the host.

* ``tensorrt``: the model, cast to half with half inputs (how fp16 is chosen on the dynamo path,
  where ``enabled_precisions`` is ignored), compiled by ``torch_tensorrt.compile(ir="dynamo",
  min_block_size=1)`` for the static input shape and saved as an ExportedProgram in the
  cache's ``tensorrt/`` folder (``$TRACKER_CACHE``, default ``~/.cache/tracker``) with a JSON
  sidecar (:mod:`tracker.engines.cache`); later runs load it, and a stale or mismatched file is
  rebuilt.
* ``cuda``: the eager model in half precision and channels_last, model + decode captured as one
  CUDA graph per batch bucket (1, 2, 4, ... up to ``max_batch``).

An engine owns static device buffers: use one engine per thread.
"""

from __future__ import annotations

import copy
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tracker.engines.base import TENSORRT_HINT, EngineError, weights_checksum
from tracker.engines.cache import EngineCacheError, EngineSpec, load_or_build
from tracker.models import heatmap

PRECISIONS = ("fp16", "fp32")
TOLERANCE_PX = 0.5  # p99 point error (heatmap pixels) allowed vs eager fp32 on real crops
TOLERANCE_LOGIT = 0.02  # max |logit error| / logit range allowed on synthetic inputs


def torch_decode(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`tracker.models.heatmap.decode` in torch ops (no host sync, CUDA-graph safe).

    ``logits`` (N, K, H, W) of any float dtype -> points float32 (N, K, 2) in heatmap pixels
    and confidence float32 (N, K). Computed in float32: the (2r+1)^2 window at the argmax is
    gathered with clamped indices and masked where it leaves the map (fixed shapes).
    """
    n, k, h, w = logits.shape
    r = heatmap.DECODE_RADIUS
    flat = logits.float().reshape(n * k, h * w)
    idx = flat.argmax(dim=1, keepdim=True)
    m = flat.gather(1, idx)
    total = torch.exp(flat - m).sum(dim=1)
    py = torch.div(idx, w, rounding_mode="floor")
    px = idx - py * w
    step = torch.arange(-r, r + 1, device=logits.device)  # a kernel, not a host copy (graph-safe)
    ys, xs = py + step, px + step  # (M, 2r+1) rows and columns of the window
    inside = (((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :])
    cells = ys.clamp(0, h - 1)[:, :, None] * w + xs.clamp(0, w - 1)[:, None, :]
    win = flat.gather(1, cells.reshape(n * k, -1)).reshape(cells.shape)
    e = torch.where(inside, torch.exp(win - m[:, :, None]), torch.zeros_like(win))
    sw = e.sum(dim=(1, 2))
    stepf = step.float()
    dx = (e.sum(dim=1) * stepf).sum(dim=1) / sw
    dy = (e.sum(dim=2) * stepf).sum(dim=1) / sw
    pts = torch.stack([px[:, 0].float() + dx, py[:, 0].float() + dy], dim=1)
    window = e[:, r - 1 : r + 2, r - 1 : r + 2].sum(dim=(1, 2))
    conf = (window / total).clamp(max=1.0)
    mm = m[:, 0]
    bad = ~torch.isfinite(mm) | ~torch.isfinite(total)
    pts = torch.where(bad[:, None], torch.full_like(pts, math.nan), pts)
    conf = torch.where(bad, torch.zeros_like(conf), conf)
    return pts.reshape(n, k, 2), conf.reshape(n, k)


class DeviceEngine:
    """Fixed-batch GPU runner: host batch -> padded device batch -> model + decode -> host."""

    name = "gpu"

    def __init__(self, max_batch: int, channels: int, size: int, dtype: torch.dtype,
                 device: str = "cuda") -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = max_batch
        self.dtype = dtype
        self.device = torch.device(device)
        shape = (max_batch, channels, size, size)
        self._host_in = torch.zeros(shape, dtype=dtype)
        if self.device.type == "cuda":
            self._host_in = self._host_in.pin_memory()  # asynchronous host -> device copies

    def _run(self, x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, points, confidence) on the device for the first ``n`` rows of ``x``."""
        raise NotImplementedError

    def _chunks(self, batch: np.ndarray) -> list[tuple[int, int]]:
        return [(i, min(i + self.max_batch, len(batch))) for i in range(0, len(batch), self.max_batch)]

    def _stage(self, part: np.ndarray) -> int:
        n = len(part)
        self._host_in[:n].copy_(torch.from_numpy(np.ascontiguousarray(part, np.float32)))
        self._host_in[n:].zero_()
        return n

    @torch.inference_mode()
    def infer(self, batch: np.ndarray) -> np.ndarray:
        outs = []
        for a, b in self._chunks(batch):
            n = self._stage(batch[a:b])
            logits, _, _ = self._run(self._host_in, n)
            outs.append(logits[:n].float().cpu().numpy())
        return np.concatenate(outs) if outs else np.empty((0,), np.float32)

    @torch.inference_mode()
    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pts, conf = [], []
        for a, b in self._chunks(batch):
            n = self._stage(batch[a:b])
            _, p, c = self._run(self._host_in, n)
            pts.append(p[:n].cpu().numpy())
            conf.append(c[:n].cpu().numpy())
        if not pts:
            return np.empty((0, 0, 2), np.float32), np.empty((0, 0), np.float32)
        return np.concatenate(pts), np.concatenate(conf)


class TensorRTEngine(DeviceEngine):
    """A torch-tensorrt compiled program (fixed batch) + on-device decode."""

    name = "tensorrt"

    def __init__(self, module: Callable[[torch.Tensor], torch.Tensor], max_batch: int,
                 channels: int, size: int, dtype: torch.dtype, path: Path | None = None,
                 device: str = "cuda") -> None:
        super().__init__(max_batch, channels, size, dtype, device)
        self.module = module
        self.path = path
        self._dev_in = torch.zeros(self._host_in.shape, dtype=dtype, device=self.device)

    def _run(self, x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self._dev_in.copy_(x, non_blocking=True)
        out = self.module(self._dev_in)
        logits = out[0] if isinstance(out, (tuple, list)) else out
        pts, conf = torch_decode(logits)
        return logits, pts, conf


class CudaGraphEngine(DeviceEngine):
    """Eager torch model in half precision, model + decode replayed as CUDA graphs per bucket."""

    name = "cuda"

    def __init__(self, model: nn.Module, max_batch: int, channels: int, size: int,
                 dtype: torch.dtype) -> None:
        super().__init__(max_batch, channels, size, dtype)
        self.model = copy.deepcopy(model).eval().to(self.device, dtype)
        self.model = self.model.to(memory_format=torch.channels_last)
        self.channels, self.size = channels, size
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, tuple[torch.Tensor, ...]]] = {}

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.model(x)
        pts, conf = torch_decode(logits)
        return logits, pts, conf

    def _graph(self, bucket: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, tuple[torch.Tensor, ...]]:
        if bucket not in self._graphs:
            static_in = torch.zeros((bucket, self.channels, self.size, self.size), dtype=self.dtype,
                                    device=self.device).contiguous(memory_format=torch.channels_last)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):  # cuDNN autotuning and allocations happen outside the graph
                    self._forward(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                outs = self._forward(static_in)
            self._graphs[bucket] = (graph, static_in, outs)
        return self._graphs[bucket]

    def _run(self, x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bucket = min(self.max_batch, 1 << max(0, n - 1).bit_length())
        graph, static_in, outs = self._graph(bucket)
        static_in.copy_(x[:bucket], non_blocking=True)
        graph.replay()
        return outs


def check_inputs(size: int, channels: int, count: int = 64,
                 data_dir: str | Path | None = None) -> tuple[np.ndarray, str]:
    """Crops for accuracy checks: real labelled faces from ``data_dir`` (default: the
    ``TRACKER_CHECK_DATA`` environment variable) when given, else synthetic smooth noise."""
    from tracker.geometry import landmark_crop
    from tracker.io.pts import load_folder
    from tracker.models.preprocess import preprocess_crops

    root = data_dir or os.environ.get("TRACKER_CHECK_DATA")
    if root and Path(root).is_dir():
        samples = load_folder(root, limit=count)
        if samples:
            crops = np.stack([landmark_crop(s.image, s.points, size) for s in samples])
            label = f"{Path(root).name}: {len(samples)} real crops"
            return preprocess_crops(crops, channels, False), label
    rng = np.random.default_rng(0)
    import cv2

    planes = [cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), 3.0)
              for _ in range(count * channels)]
    x = np.stack(planes).reshape(count, channels, size, size)
    x = (x - x.mean(axis=(1, 2, 3), keepdims=True)) / x.std(axis=(1, 2, 3), keepdims=True)
    return x.astype(np.float32), f"synthetic: {count} smooth-noise inputs"


def accuracy_check(engine: Any, model: nn.Module, inputs: np.ndarray, source: str,
                   real: bool) -> dict[str, Any]:
    """Compare ``engine`` with eager fp32 on the CPU: point errors (heatmap px) and logits."""
    cpu = copy.deepcopy(model).float().cpu().eval()
    with torch.inference_mode():
        ref = cpu(torch.from_numpy(inputs)).numpy()
    ref_pts, _ = heatmap.decode(ref)
    pts, _ = engine.predict(inputs)
    logits = engine.infer(inputs).astype(np.float32)
    err = np.linalg.norm(pts - ref_pts, axis=-1).ravel()
    err = err[np.isfinite(err)]
    span = float(ref.max() - ref.min()) or 1.0
    logit_err = float(np.abs(logits - ref).max())
    p99 = float(np.percentile(err, 99)) if err.size else math.inf
    passed = p99 <= TOLERANCE_PX if real else logit_err / span <= TOLERANCE_LOGIT
    return {
        "inputs": source,
        "point_err_px_mean": round(float(err.mean()) if err.size else math.inf, 4),
        "point_err_px_p99": round(p99, 4),
        "point_err_px_max": round(float(err.max()) if err.size else math.inf, 4),
        "logit_err_max": round(logit_err, 5),
        "logit_range": round(span, 3),
        "criterion": (f"p99 point error <= {TOLERANCE_PX} px" if real
                      else f"max logit error <= {TOLERANCE_LOGIT} x logit range"),
        "passed": bool(passed),
    }


def tensorrt_spec(name: str, model: nn.Module, size: int, channels: int, batch: int,
                  precision: str) -> EngineSpec:
    """What a TensorRT engine for this model on this GPU is keyed by."""
    import torch_tensorrt

    try:
        import tensorrt

        trt_version = str(tensorrt.__version__)
    except ImportError:  # torch-tensorrt without the tensorrt Python package: key on its version
        trt_version = f"torch-tensorrt{torch_tensorrt.__version__}"
    major, minor = torch.cuda.get_device_capability()
    return EngineSpec(
        model=name, size=size, channels=channels, batch=batch, precision=precision,
        backend="tensorrt", backend_version=trt_version,
        device=torch.cuda.get_device_name(), capability=f"{major}.{minor}",
        weights_sha256=weights_checksum(model),
        runtime=f"torch {torch.__version__}, torch-tensorrt {torch_tensorrt.__version__}",
    )


def build_tensorrt(model: nn.Module, size: int, channels: int, batch: int, dtype: torch.dtype,
                   path: Path) -> None:
    """Compile ``model`` for a static ``(batch, channels, size, size)`` input and save it."""
    import torch_tensorrt

    m = copy.deepcopy(model).eval().to("cuda", dtype)
    x = torch.zeros((batch, channels, size, size), dtype=dtype, device="cuda")
    with torch.no_grad():
        compiled = torch_tensorrt.compile(m, ir="dynamo", arg_inputs=[x], min_block_size=1)
        torch_tensorrt.save(compiled, str(path), output_format="exported_program", arg_inputs=[x])


def load_tensorrt(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """A saved torch-tensorrt ExportedProgram as a callable module."""
    import torch_tensorrt

    program = torch_tensorrt.load(str(path))
    return program.module() if hasattr(program, "module") else program


def open_tensorrt(model: nn.Module, size: int, channels: int, *, max_batch: int, precision: str,
                  name: str, config: dict[str, Any], directory: str | Path | None = None,
                  force: bool = False,
                  log: Callable[[str], None] | None = None) -> tuple[TensorRTEngine, Path, bool]:
    """Load the cached TensorRT engine for this model and GPU, building it when needed, in
    ``directory`` (default: ``cache_dir("tensorrt")``, see :mod:`tracker.engines.cache`).

    Returns ``(engine, path, built)``.
    """
    dtype = torch.float16 if precision == "fp16" else torch.float32
    spec = tensorrt_spec(name, model, size, channels, max_batch, precision)
    inputs, source = check_inputs(size, channels)
    real = "real crops" in source

    def load(path: Path) -> TensorRTEngine:
        return TensorRTEngine(load_tensorrt(path), max_batch, channels, size, dtype, path)

    def build(path: Path) -> None:
        build_tensorrt(model, size, channels, max_batch, dtype, path)

    def check(engine: TensorRTEngine) -> dict[str, Any]:
        return accuracy_check(engine, model, inputs, source, real)

    engine, path, built = load_or_build(directory, spec, config, build, load, check, force=force,
                                        log=log)
    engine.path = path
    return engine, path, built


def _stderr(message: str) -> None:
    sys.stderr.write(f"note: {message} (one-time, may take a minute)\n")
    sys.stderr.flush()


def create_gpu_engine(kind: str, model: nn.Module, size: int, channels: int, *, max_batch: int,
                      precision: str, name: str, config: dict[str, Any],
                      directory: str | Path | None = None) -> DeviceEngine:
    """A ``tensorrt`` or ``cuda`` engine (see the module docstring)."""
    if precision not in PRECISIONS:
        raise EngineError(f"unknown precision {precision!r}; choose {' or '.join(PRECISIONS)}")
    dtype = torch.float16 if precision == "fp16" else torch.float32
    if kind == "cuda":
        return CudaGraphEngine(model, max_batch, channels, size, dtype)
    try:
        import torch_tensorrt  # noqa: F401
    except ImportError as exc:
        raise EngineError(TENSORRT_HINT) from exc
    try:
        engine, _, _ = open_tensorrt(model, size, channels, max_batch=max_batch,
                                     precision=precision, name=name, config=config,
                                     directory=directory, log=_stderr)
    except EngineCacheError as exc:
        raise EngineError(str(exc)) from exc
    return engine
