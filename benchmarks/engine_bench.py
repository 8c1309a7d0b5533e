"""Compare CPU inference paths for a landmark model at batch 1: ms per call and accuracy.

Paths: eager NCHW, eager channels_last, TorchScript trace + freeze + optimize_for_inference,
torch.compile (``--compile``; ~1 min to compile), ONNX Runtime with 1 and 2 intra-op threads,
OpenVINO fp32 and (where the CPU has native bfloat16) bf16 with 1 thread (``--accuracy``: their
val NME and point error against eager fp32),
and ONNX Runtime int8 static QDQ quantisation (``--int8``; calibrated on faces68/train crops,
scored on faces68/val). Each path is timed in rounds interleaved with the others (the machine is
shared), reporting the median wall and calling-thread CPU ms; accuracy is the max logit error
vs eager fp32 (and NME for int8).

Run: python benchmarks/engine_bench.py [--weights W] [--threads 1] [--compile] [--int8] [--accuracy]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from tracker.engines.cpu import onnx_bytes
from tracker.face68 import OUTER_EYE_CORNERS
from tracker.models.checkpoint import load_checkpoint

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces68"


def ort_session(model_path: str, threads: int):  # noqa: ANN201 - onnxruntime type
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])


def crops(folder: Path, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    from tracker.io.pts import load_folder
    from tracker.models.preprocess import preprocess_crops
    from tracker.training.data import face_crop

    samples = load_folder(folder, limit=limit)
    pairs = [face_crop(s.image, s.points, 64, None, None) for s in samples]
    return preprocess_crops(np.stack([c for c, _ in pairs]), 1, False), np.stack([p for _, p in pairs])


def nme(points: np.ndarray, truth: np.ndarray) -> float:
    """Mean error normalised by the outer-eye-corner distance, in %."""
    a, b = OUTER_EYE_CORNERS
    d = np.linalg.norm(truth[:, a] - truth[:, b], axis=1)
    return float((np.linalg.norm(points - truth, axis=-1).mean(1) / d).mean() * 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=100, help="timed calls per round")
    parser.add_argument("--compile", action="store_true", help="include torch.compile")
    parser.add_argument("--int8", action="store_true", help="include ORT int8 (needs faces68)")
    parser.add_argument("--accuracy", action="store_true",
                        help="OpenVINO val NME and point error vs eager fp32 (needs faces68)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    ckpt = load_checkpoint(args.weights)
    s = ckpt.net.size
    x = np.random.default_rng(0).standard_normal((1, ckpt.net.in_channels, s, s)).astype(np.float32)
    xt = torch.from_numpy(x)
    eager = ckpt.model.eval()
    ref = eager(xt).numpy()
    tmp = Path(tempfile.mkdtemp())
    onnx_path = tmp / "model.onnx"
    onnx_path.write_bytes(onnx_bytes(eager, s, ckpt.net.in_channels))

    paths: dict[str, Callable[[], np.ndarray]] = {"eager": lambda: eager(xt).numpy()}
    cl = load_checkpoint(args.weights).model.eval().to(memory_format=torch.channels_last)
    xcl = xt.contiguous(memory_format=torch.channels_last)
    paths["eager channels_last"] = lambda: cl(xcl).numpy()
    traced = torch.jit.trace(load_checkpoint(args.weights).model.eval(), xt)
    frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
    paths["torchscript freeze"] = lambda: frozen(xt).numpy()
    if args.compile:
        compiled = torch.compile(load_checkpoint(args.weights).model.eval(), dynamic=False)
        paths["torch.compile"] = lambda: compiled(xt).numpy()
    for threads in (1, 2):
        sess = ort_session(str(onnx_path), threads)
        paths[f"onnxruntime {threads} thread"] = lambda sess=sess: sess.run(None, {"input": x})[0]
    from tracker.engines.openvino import OpenVinoEngine, bf16_supported

    ov_engines = {"fp32": OpenVinoEngine(onnx_path.read_bytes(), 1, "fp32")}
    if bf16_supported():
        ov_engines["bf16"] = OpenVinoEngine(onnx_path.read_bytes(), 1, "bf16")
    for prec, eng in ov_engines.items():
        paths[f"openvino {prec} 1 thread"] = lambda eng=eng: eng.infer(x)
    if args.accuracy:
        from tracker.models import heatmap

        val, truth = crops(DATA / "val", None)
        ref_val = np.concatenate([eager(torch.from_numpy(val[i:i + 64])).numpy()
                                  for i in range(0, len(val), 64)])
        ref_pts = heatmap.decode(ref_val)[0]
        print(f"eager fp32: val NME {nme(ref_pts, truth):.3f}% on {len(val)} faces (crop-box crops)")
        for prec, eng in ov_engines.items():
            pts = np.concatenate([eng.predict(val[i:i + 1])[0] for i in range(len(val))])
            d = np.linalg.norm(pts - ref_pts, axis=-1)
            print(f"openvino {prec}: val NME {nme(pts, truth):.3f}%; point error vs eager fp32 "
                  f"mean {d.mean():.3f} px, p99 {np.percentile(d, 99):.3f} px, max {d.max():.2f} px")
    if args.int8:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        calib, _ = crops(DATA / "train", 300)

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.it = iter([{"input": calib[i:i + 1]} for i in range(len(calib))])

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.it, None)

        q_path = tmp / "model_int8.onnx"
        quantize_static(str(onnx_path), str(q_path), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
        q = ort_session(str(q_path), 1)
        paths["onnxruntime int8 static"] = lambda: q.run(None, {"input": x})[0]
        from tracker.models import heatmap

        val, truth = crops(DATA / "val", None)
        f32 = ort_session(str(onnx_path), 1)
        for name, sess in (("fp32", f32), ("int8", q)):
            out = np.concatenate([sess.run(None, {"input": val[i:i + 64]})[0]
                                  for i in range(0, len(val), 64)])
            pts, _ = heatmap.decode(out)
            print(f"{name}: val NME {nme(pts, truth):.3f}% on {len(val)} faces (crop-box crops)")

    walls: dict[str, list[float]] = {k: [] for k in paths}
    cpus: dict[str, list[float]] = {k: [] for k in paths}
    for fn in paths.values():
        for _ in range(10):
            fn()
    for _ in range(args.rounds):
        for name, fn in paths.items():
            for _ in range(args.calls):
                t0, c0 = time.perf_counter(), time.thread_time()
                fn()
                cpus[name].append(time.thread_time() - c0)
                walls[name].append(time.perf_counter() - t0)
    print(f"{'path':26s} {'wall p50':>9s} {'cpu p50':>9s} {'wall p90':>9s}  max|logit err|")
    for name, fn in paths.items():
        err = float(np.abs(fn() - ref).max())
        w, c = np.asarray(walls[name]) * 1e3, np.asarray(cpus[name]) * 1e3
        print(f"{name:26s} {np.median(w):8.3f}  {np.median(c):8.3f}  {np.percentile(w, 90):8.3f}"
              f"   {err:.2e}")


if __name__ == "__main__":
    main()
