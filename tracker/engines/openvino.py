"""OpenVINO CPU engine: the exported ONNX graph compiled once per batch size.

On CPUs with native bfloat16 (AVX512-BF16 or AMX, which OpenVINO reports as ``BF16``) the
default precision is bf16: on this project's 2-core EPYC it took 0.77 ms per face against 1.30 ms
in fp32 and 1.16 ms for ONNX Runtime (one quiet run of ``python benchmarks/engine_bench.py``),
and moved val NME by +0.02 points. Elsewhere, or with ``precision="fp32"``, it runs fp32.

A graph is compiled for a static batch shape (static shapes ran ~7 % faster than a dynamic
batch axis) and kept. Up to :data:`EXACT_BATCH` faces get a graph of their own size; more are
padded to the next power of two, and more than :data:`MAX_BATCH` run in chunks, so any number
of faces needs at most a dozen graphs (each compile ~60 ms and a few MB).

In bf16 the logits leave OpenVINO as bf16 (its own layer output, not converted to float32 in
the graph) and :func:`tracker.models.heatmap.decode_bf16` decodes them: the same points to the
bit as the float32 output on the Xeon with AMX, ~0.1 ms a face less (the conversion and half of
the output's bytes); ``infer`` still returns float32 logits.
"""

from __future__ import annotations

import numpy as np

from tracker.engines.base import EngineError, HostDecode
from tracker.engines.cache import cache_dir
from tracker.models import heatmap

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
_HINTS = {"bf16": "bf16", "fp16": "f16", "fp32": "f32"}  # INFERENCE_PRECISION_HINT values
EXACT_BATCH = 8  # batch sizes compiled exactly (the common case: a few faces)
MAX_BATCH = 64  # the largest graph; more faces run in chunks of this size


def batch_bucket(n: int) -> int:
    """The compiled batch size that runs ``n`` faces (n <= MAX_BATCH)."""
    if n <= EXACT_BATCH:
        return max(1, n)
    return min(MAX_BATCH, 1 << (n - 1).bit_length())


def warm_sizes(max_faces: int) -> list[int]:
    """Every compiled batch size that ``1..max_faces`` faces can use."""
    return sorted({batch_bucket(min(n, MAX_BATCH)) for n in range(1, max(1, max_faces) + 1)})


def bf16_supported() -> bool:
    """True when OpenVINO's CPU plugin reports native bfloat16 support here."""
    try:
        import openvino as ov
    except ImportError:
        return False
    return _has_bf16(ov.Core())


def _has_bf16(core) -> bool:  # noqa: ANN001 - openvino.Core
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def default_properties(precision: str, threads: int | None = None) -> dict[str, object]:
    """The compile properties of an explicit ``--engine openvino[-fp32]``: ``precision``
    (bf16, fp16 or fp32), the LATENCY hint, one stream, ``threads`` threads (1), no pinning."""
    return {
        "INFERENCE_NUM_THREADS": int(threads or 1),
        "INFERENCE_PRECISION_HINT": _HINTS[precision],
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "ENABLE_CPU_PINNING": False,
    }


class OpenVinoEngine(HostDecode):
    """OpenVINO CPU inference over an ONNX export, ``threads`` inference threads, no pinning;
    ``properties`` replace or add compile properties (the tuner's candidates use them);
    ``cache`` keeps the compiled graphs on disk (see :meth:`_cache_compiled`)."""

    name = "openvino"

    def __init__(self, onnx: bytes, threads: int | None = None, precision: str = "auto", *,
                 properties: dict[str, object] | None = None, cache: bool = True,
                 bf16_output: bool = True) -> None:
        if precision not in PRECISIONS:
            raise EngineError(f"unknown OpenVINO precision {precision!r}; choose one of "
                              f"{', '.join(PRECISIONS)}")
        try:
            import openvino as ov
        except ImportError as exc:
            raise EngineError("openvino is not installed: pip install openvino") from exc
        self._ov = ov
        self._bf16_output = bf16_output  # False: float32 logits out of the graph (comparisons)
        self._core = ov.Core()
        if cache:
            self._cache_compiled(self._core)
        if precision == "auto":
            precision = "bf16" if _has_bf16(self._core) else "fp32"
        self.precision = precision
        self._config = {**default_properties(precision, threads), **(properties or {})}
        try:
            self._model = self._core.read_model(onnx)
            self._requests: dict[int, object] = {}
            self._inputs: dict[int, np.ndarray] = {}
            self._request(1)
        except EngineError:
            raise
        except Exception as exc:  # OpenVINO raises bare RuntimeErrors with long texts
            raise EngineError(f"OpenVINO cannot compile the model: {str(exc).splitlines()[0]}") from exc

    @staticmethod
    def _cache_compiled(core) -> None:  # noqa: ANN001 - openvino.Core
        """Keep compiled graphs in ``cache_dir("openvino")`` (later starts load them, ~30 %
        faster than compiling); a cache that cannot be made is skipped."""
        folder = cache_dir("openvino")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            core.set_property({"CACHE_DIR": str(folder)})
        except (OSError, RuntimeError):
            pass

    def _request(self, n: int):  # noqa: ANN202 - openvino.InferRequest
        req = self._requests.get(n)
        if req is None:
            model = self._model.clone()
            dims = model.inputs[0].partial_shape
            shape = [n, *(dims[i].get_length() for i in range(1, len(dims)))]
            model.reshape({model.inputs[0].any_name: shape})
            if self.precision == "bf16" and self._bf16_output:
                from openvino.preprocess import PrePostProcessor

                ppp = PrePostProcessor(model)
                ppp.output(0).tensor().set_element_type(self._ov.Type.bf16)
                model = ppp.build()
            req = self._core.compile_model(model, "CPU", self._config).create_infer_request()
            # a bound input buffer: infer() then skips OpenVINO's per-call input conversion
            # (~60 us a call on the default model)
            buf = np.zeros(shape, np.float32)
            req.set_input_tensor(self._ov.Tensor(buf, shared_memory=True))
            self._requests[n] = req
            self._inputs[n] = buf
        return req

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Logits: OpenVINO's output buffer (valid until the next call) for up to EXACT_BATCH
        faces, a fresh array for padded or chunked batches."""
        x = np.ascontiguousarray(batch, np.float32)
        n = x.shape[0]
        if n <= EXACT_BATCH:
            return self._infer(x)
        parts = []
        for i in range(0, n, MAX_BATCH):
            chunk = x[i:i + MAX_BATCH]
            size = batch_bucket(chunk.shape[0])
            if size != chunk.shape[0]:
                chunk = np.concatenate([chunk, np.zeros((size - chunk.shape[0], *chunk.shape[1:]),
                                                        np.float32)])
            parts.append(self._infer(chunk)[: min(MAX_BATCH, n - i)].copy())
        return np.concatenate(parts)

    def _infer(self, x: np.ndarray) -> np.ndarray:
        req = self._request(x.shape[0])
        np.copyto(self._inputs[x.shape[0]], x)
        req.infer()
        return req.get_output_tensor(0).data

    def infer(self, batch: np.ndarray) -> np.ndarray:
        out = self._run(batch)
        if out.dtype.itemsize == 2:  # bf16 bit patterns
            return heatmap.bf16_to_float32(out).reshape(out.shape)
        return out.copy()

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self._run(batch)  # decoded in place, no copy
        return heatmap.decode_bf16(out) if out.dtype.itemsize == 2 else heatmap.decode(out)
