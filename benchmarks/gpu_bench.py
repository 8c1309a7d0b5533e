"""GPU benchmark: build the TensorRT engine (or use the CUDA-graph path), check it against fp32,
time it per face, and run the whole pipeline on the hamilton clip and a 1080p upscale of it.

For a CUDA machine (``pip install -e '.[tensorrt]'`` for TensorRT). Prints, per batch size:
the accuracy against eager fp32 on the CPU (point error in heatmap pixels on faces68/val crops,
and in frame pixels on the clip's faces) and host-to-host latency per call and per face; then
``tracker bench`` figures (fps, per-stage p50/p99, model ms/face) for both clips, with and
without render + encode; then aggregate fps of several pipelines run at once (``--streams``).

Run: python benchmarks/gpu_bench.py [--engine auto|tensorrt|cuda] [--precision fp16]
     [--batches 1,8,32] [--streams 1,2,4] [--weights W] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

CLIP = Path(__file__).resolve().parents[1].parent / "shared/data/videos/short_hamilton_clip.mp4"


def upscale_clip(src: Path, dst: Path, size: tuple[int, int] = (1920, 1080)) -> Path:
    """Write ``src`` upscaled (bicubic) to ``size`` as H.264, same timestamps, no audio."""
    import av
    import cv2

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        rate = vin.average_rate or 30
        vout = out.add_stream("libx264", rate=rate)
        vout.width, vout.height, vout.pix_fmt = size[0], size[1], "yuv420p"
        vout.time_base = vin.time_base
        vout.options = {"preset": "veryfast", "crf": "18"}
        for frame in inp.decode(vin):
            big = cv2.resize(frame.to_ndarray(format="rgb24"), size, interpolation=cv2.INTER_CUBIC)
            new = av.VideoFrame.from_ndarray(big, format="rgb24")
            new.pts, new.time_base = frame.pts, frame.time_base
            for packet in vout.encode(new):
                out.mux(packet)
        for packet in vout.encode():
            out.mux(packet)
    return dst


def latency(engine: Any, x: np.ndarray, calls: int) -> dict[str, float]:
    """Host-to-host ms per call (p50/p99) and per face of ``engine.predict``."""
    for _ in range(20):
        engine.predict(x)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        engine.predict(x)
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1e3
    return {"p50_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)),
            "ms_per_face": float(np.median(ms)) / len(x)}


def clip_error_px(kind: str, weights: str | None, precision: str) -> dict[str, float]:
    """Max/p99 frame-pixel difference of GPU vs CPU fp32 landmarks on the clip's tracked faces."""
    import av

    from tracker.detect.detectors import create_detector
    from tracker.landmarker import load_landmarker

    gpu = load_landmarker(weights, kind, precision=precision)
    cpu = load_landmarker(weights, "torch")
    det = create_detector()
    errs = []
    with av.open(str(CLIP)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i % 5:
                continue
            image = frame.to_ndarray(format="rgb24")
            boxes = det.detect(image)
            if not boxes:
                continue
            a, b = gpu.predict(image, boxes), cpu.predict(image, boxes)
            errs += [np.linalg.norm(p.points - q.points, axis=1) for p, q in zip(a, b, strict=True)]
    e = np.concatenate(errs) if errs else np.zeros(1)
    return {"faces": len(errs), "max_px": float(e.max()), "p99_px": float(np.percentile(e, 99)),
            "mean_px": float(e.mean())}


def bench_clip(clip: Path, kind: str, weights: str | None, out: str | None) -> dict[str, Any]:
    from tracker.cli.bench import run_bench
    from tracker.config.schema import Config

    cfg = Config().with_overrides({"run.source": str(clip), "run.max_frames": 0, "run.out": out,
                                   "model.engine": kind, "model.weights": weights})
    return run_bench(cfg, (1, 8, 32), repeats=50)


def streams(n: int, kind: str, weights: str | None) -> dict[str, float]:
    """Aggregate fps of ``n`` decode -> track -> smooth pipelines on the clip, run at once."""
    from tracker.api import Tracker

    trackers = [Tracker.from_config(None, source=str(CLIP), engine=kind, weights=weights)
                for _ in range(n)]
    for t in trackers:
        t.landmarker  # noqa: B018 - load every model before the clock starts
    results: list[Any] = [None] * n

    def go(i: int) -> None:
        results[i] = trackers[i].run(outputs=[]).metrics

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    frames = sum(r.frames for r in results)
    return {"streams": n, "frames": frames, "seconds": wall, "fps_total": frames / wall,
            "fps_per_stream": frames / wall / n}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", default="auto", choices=["auto", "tensorrt", "cuda"])
    parser.add_argument("--precision", default="fp16", choices=["fp16", "fp32"])
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--streams", default="1,2,4")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--json", default=None, help="also write all results to this file")
    args = parser.parse_args()

    import torch

    from tracker.engines.base import tensorrt_available
    from tracker.engines.gpu import accuracy_check, check_inputs
    from tracker.engines.registry import create_engine, resolve_engine
    from tracker.landmarker import model_name
    from tracker.models.checkpoint import load_checkpoint

    if not torch.cuda.is_available():
        print("gpu_bench: no CUDA GPU here (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    kind = resolve_engine(args.engine)
    if kind == "tensorrt" and not tensorrt_available():
        kind = "cuda"
    print(f"GPU {torch.cuda.get_device_name()}, engine {kind}, {args.precision}, "
          f"torch {torch.__version__}")
    ckpt = load_checkpoint(args.weights)
    config = {"net": asdict(ckpt.net), "dkm": asdict(ckpt.dkm) if ckpt.dkm else None}
    inputs, source = check_inputs(ckpt.net.size, ckpt.net.in_channels,
                                   data_dir=CLIP.parents[1] / "faces68" / "val")
    results: dict[str, Any] = {"gpu": torch.cuda.get_device_name(), "engine": kind,
                               "precision": args.precision, "batches": {}}
    for b in (int(v) for v in args.batches.split(",")):
        t0 = time.perf_counter()
        eng = create_engine(ckpt.model, ckpt.net.size, ckpt.net.in_channels, kind, max_batch=b,
                            precision=args.precision, name=model_name(args.weights), config=config)
        ready = time.perf_counter() - t0
        acc = accuracy_check(eng, ckpt.model, inputs, source, "real crops" in source)
        x = np.ascontiguousarray(np.resize(inputs, (b, *inputs.shape[1:])))
        lat = latency(eng, x, args.calls)
        results["batches"][str(b)] = {"ready_s": ready, "accuracy": acc, **lat}
        print(f"batch {b:3d}: {lat['ms_per_face']:.4f} ms/face (p50 {lat['p50_ms']:.3f} ms, "
              f"p99 {lat['p99_ms']:.3f} ms per call); vs fp32: p99 {acc['point_err_px_p99']} px, "
              f"max {acc['point_err_px_max']} px (heatmap px, {acc['inputs']}); "
              f"engine ready in {ready:.1f} s")
    if CLIP.exists():
        results["clip_error"] = clip_error_px(kind, args.weights, args.precision)
        print(f"clip faces vs CPU fp32 (frame px): {results['clip_error']}")
        with tempfile.TemporaryDirectory() as tmp:
            big = upscale_clip(CLIP, Path(tmp) / "hamilton_1080p.mp4")
            for name, clip in (("640x360", CLIP), ("1920x1080", big)):
                for out in (None, str(Path(tmp) / f"out_{name}.mp4")):
                    r = bench_clip(clip, kind, args.weights, out)
                    label = f"{name} {'run --out' if out else 'no outputs'}"
                    results[label] = r
                    stages = ", ".join(f"{k} {v['p50_ms']:.2f}/{v['p99_ms']:.2f}"
                                       for k, v in r["stages"].items())
                    print(f"{label}: {r['fps']:.1f} fps ({r['frames']} frames); p50/p99 ms: "
                          f"{stages}; model ms/face {r['model_ms_per_face']}")
        for n in (int(v) for v in args.streams.split(",")):
            s = streams(n, kind, args.weights)
            results[f"streams_{n}"] = s
            print(f"{n} streams: {s['fps_total']:.1f} fps total, {s['fps_per_stream']:.1f} per stream")
    else:
        print(f"clip not found ({CLIP}): skipped end-to-end runs")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
