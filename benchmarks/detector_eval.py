"""Compare face detectors: recall, false positives, speed and box calibration.

Run: python benchmarks/detector_eval.py [--fit] [--json] [--limit N] [--only NAME ...]

For each candidate it prints
- recall on faces68/val (every image holds one face), on the image as stored and pasted in the
  middle of a black 640x480 canvas (same face size, bigger frame);
- false positives per val image (raw detections that are not the face);
- median / p90 wall ms per 640x480 frame: Hamilton frames resized to 640x480 (real content; Haar
  cascades run faster on the black canvas, so canvas timing flatters them), and the canvases;
  plus median CPU ms of the same frames (everything single-threaded, so this is the time on one
  idle core even when other jobs share the machine; also printed: the load average);
- on the Hamilton clip (640x360), frames 82-210, the shot where only the singer is in view
  (between the scene cuts at 82 and 211, checked by eye; the other shots show an audience):
  share of frames with exactly one box, with none, extra boxes per frame (false positives:
  mostly his raised hands), and median ms per frame over the whole clip;
- calibration: mean IoU of the calibrated box with the tight landmark box on val, and the share
  of faces with IoU >= 0.5.

A raw detection is a *hit* when its box contains the nose tip (point 31) and the square root of
its area is within a factor 2 of the landmark box's: a detector-independent criterion, applied
before calibration. With --fit the calibration is refitted on faces68/train (medians of the
centre offset and size ratio over matched faces, in units of the raw box) and printed as the
constants to paste into tracker/detect.py; val calibration figures then use the refitted values.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from tracker.detect.detectors import BlazeFaceDetector, Calibration, HaarDetector, box_iou
from tracker.geometry import box_from_points
from tracker.io.pts import Sample, load_folder

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NOSE_TIP = 30  # 0-based index of point 31
SINGER_ONLY = range(82, 211)  # Hamilton clip frames with exactly one face in view

CANDIDATES: dict[str, Callable[[], object]] = {
    "blazeface": lambda: BlazeFaceDetector(),
    "blazeface-0.5": lambda: BlazeFaceDetector(score_threshold=0.5),
    "blazeface-whole-only": lambda: BlazeFaceDetector(min_face=1e9),
    "haar-default": lambda: HaarDetector("default"),
    "haar-alt2": lambda: HaarDetector("alt2"),
    "haar-default-fine": lambda: HaarDetector("default", scale_factor=1.05, max_side=10_000,
                                              min_face=16),
}


def truth_box(points: np.ndarray) -> np.ndarray:
    b = box_from_points(points)
    return np.array([b.x0, b.y0, b.x1, b.y1], np.float64)


def is_hit(box: np.ndarray, points: np.ndarray) -> bool:
    """Raw box holds the nose tip and its size is within 2x of the landmark box."""
    nx, ny = points[NOSE_TIP]
    if not (box[0] <= nx <= box[2] and box[1] <= ny <= box[3]):
        return False
    t = truth_box(points)
    ratio = np.sqrt(max((box[2] - box[0]) * (box[3] - box[1]), 1e-9)
                    / ((t[2] - t[0]) * (t[3] - t[1])))
    return 0.5 <= ratio <= 2.0


def on_canvas(image: np.ndarray, points: np.ndarray, w: int = 640, h: int = 480):
    """The image centred on a black w x h canvas (cropped if larger) and the moved points."""
    canvas = np.zeros((h, w, 3), np.uint8)
    ih, iw = image.shape[:2]
    ox, oy = (w - iw) // 2, (h - ih) // 2
    sx0, sy0 = max(-ox, 0), max(-oy, 0)
    dx0, dy0 = max(ox, 0), max(oy, 0)
    cw, ch = min(iw - sx0, w - dx0), min(ih - sy0, h - dy0)
    canvas[dy0:dy0 + ch, dx0:dx0 + cw] = image[sy0:sy0 + ch, sx0:sx0 + cw]
    return canvas, points + np.array([ox, oy], np.float32)


def match(raw: list, points: np.ndarray):
    """The best-scoring raw detection that hits the face, or None."""
    for box, _ in raw:
        if is_hit(box, points):
            return box
    return None


def fit_calibration(pairs: list[tuple[np.ndarray, np.ndarray]]) -> Calibration:
    """Median centre offset / size ratio of the landmark box relative to the raw box."""
    raw = np.array([p[0] for p in pairs], np.float64)
    tru = np.array([p[1] for p in pairs], np.float64)
    w, h = raw[:, 2] - raw[:, 0], raw[:, 3] - raw[:, 1]
    dx = ((tru[:, 0] + tru[:, 2]) - (raw[:, 0] + raw[:, 2])) / 2 / w
    dy = ((tru[:, 1] + tru[:, 3]) - (raw[:, 1] + raw[:, 3])) / 2 / h
    sx = (tru[:, 2] - tru[:, 0]) / w
    sy = (tru[:, 3] - tru[:, 1]) / h
    return Calibration(*(round(float(np.median(v)), 4) for v in (dx, dy, sx, sy)))


def calibrated_iou(cal: Calibration, box: np.ndarray, points: np.ndarray) -> float:
    b = cal.apply(*box, 1.0)
    return float(box_iou(np.array(b.as_list()), truth_box(points)[None])[0])


def timed(fn, image) -> tuple[object, float, float]:
    """(result, wall ms, CPU ms of this thread); everything runs on this thread (see main)."""
    t, c = time.perf_counter(), time.thread_time()
    out = fn(image)
    return out, (time.perf_counter() - t) * 1e3, (time.thread_time() - c) * 1e3


def clip_frames() -> list[np.ndarray]:
    path = DATA / "videos" / "short_hamilton_clip.mp4"
    if not path.exists():
        return []
    import av

    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
    return frames


def evaluate(det, val: list[Sample], frames: list[np.ndarray], cal: Calibration) -> dict:
    for _ in range(3):  # warm up (session allocation, anchor cache)
        det.detect_raw(on_canvas(val[0].image, val[0].points)[0])
    hits = hits_canvas = fps = 0
    ious, ms = [], []
    for s in val:
        raw = det.detect_raw(s.image)
        box = match(raw, s.points)
        hits += box is not None
        fps += len(raw) - (box is not None)
        if box is not None:
            ious.append(calibrated_iou(cal, box, s.points))
        canvas, pts = on_canvas(s.image, s.points)
        raw_c, t, _ = timed(det.detect_raw, canvas)
        ms.append(t)
        hits_canvas += match(raw_c, pts) is not None
    counts, clip_ms, vga_ms, vga_cpu = [], [], [], []
    for i, f in enumerate(frames):
        raw, t, _ = timed(det.detect_raw, f)
        clip_ms.append(t)
        if i in SINGER_ONLY:
            counts.append(len(raw))
        if i % 2 == 0:
            _, t, c = timed(det.detect_raw, cv2.resize(f, (640, 480)))
            vga_ms.append(t)
            vga_cpu.append(c)
    counts_a = np.array(counts) if counts else np.zeros(0)
    n = len(val)
    return {
        "recall": hits / n,
        "recall_640x480": hits_canvas / n,
        "fp_per_image": fps / n,
        "ms_640x480_median": float(np.median(vga_ms)) if vga_ms else None,
        "ms_640x480_p90": float(np.percentile(vga_ms, 90)) if vga_ms else None,
        "cpu_ms_640x480_median": float(np.median(vga_cpu)) if vga_cpu else None,
        "ms_canvas_median": float(np.median(ms)),
        "ms_canvas_p90": float(np.percentile(ms, 90)),
        "clip_one_face": float(np.mean(counts_a == 1)) if counts else None,
        "clip_no_face": float(np.mean(counts_a == 0)) if counts else None,
        "clip_extra_per_frame": float(np.mean(np.maximum(counts_a - 1, 0))) if counts else None,
        "clip_ms_median": float(np.median(clip_ms)) if counts else None,
        "calib_iou_mean": float(np.mean(ious)) if ious else 0.0,
        "calib_iou_ge_0.5": float(np.mean(np.array(ious) >= 0.5)) if ious else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Face detector recall / FP / speed / calibration.")
    p.add_argument("--data", type=Path, default=DATA / "faces68")
    p.add_argument("--fit", action="store_true", help="refit calibration on train and print it")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument("--no-clip", action="store_true", help="skip the Hamilton clip")
    p.add_argument("--only", nargs="*", choices=sorted(CANDIDATES), help="candidates to run")
    args = p.parse_args(argv)
    # One thread everywhere (ORT sessions use 1 by default): the CPU-time column is then the
    # whole cost per frame, which stays meaningful while other jobs load the machine.
    cv2.setNumThreads(1)
    if not (args.data / "val").is_dir():
        print(f"error: no faces68 data at {args.data}", file=sys.stderr)
        return 2
    val = load_folder(args.data / "val", args.limit)
    train = load_folder(args.data / "train", args.limit) if args.fit else []
    frames = [] if args.no_clip else clip_frames()
    results = {}
    for name in args.only or CANDIDATES:
        det = CANDIDATES[name]()
        cal = det.calibration
        if args.fit:
            pairs = []
            for s in train:
                box = match(det.detect_raw(s.image), s.points)
                if box is not None:
                    pairs.append((box, truth_box(s.points)))
            cal = fit_calibration(pairs)
            if not args.json:
                print(f"{name}: fitted on {len(pairs)}/{len(train)} train faces: {cal!r}")
        r = evaluate(det, val, frames, cal)
        r["calibration"] = [cal.dx, cal.dy, cal.sx, cal.sy]
        results[name] = r
        if not args.json:
            print(f"{name:22s} recall {r['recall']:.2%} (on 640x480 canvas "
                  f"{r['recall_640x480']:.2%})  FP/img {r['fp_per_image']:.3f}  "
                  f"canvas ms {r['ms_canvas_median']:.1f} (p90 {r['ms_canvas_p90']:.1f})  "
                  f"calib IoU {r['calib_iou_mean']:.3f} (>=0.5: {r['calib_iou_ge_0.5']:.1%})",
                  flush=True)
            if frames:
                print(f"{'':22s} ms/640x480 frame {r['ms_640x480_median']:.1f} "
                      f"(p90 {r['ms_640x480_p90']:.1f}, CPU {r['cpu_ms_640x480_median']:.1f}), "
                      f"clip {r['clip_ms_median']:.1f}; singer "
                      f"shot: one box {r['clip_one_face']:.1%}, none {r['clip_no_face']:.1%}, "
                      f"extra/frame {r['clip_extra_per_frame']:.3f}", flush=True)
    load = os.getloadavg()[0]
    if args.json:
        print(json.dumps({"images": len(val), "clip_frames": len(frames), "load_average": load,
                          "cpus": os.cpu_count(), "results": results}))
    else:
        print(f"load average {load:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
