"""dlib's 68-point shape predictor against the tracker on the same labelled folders.

Run: python benchmarks/vs_dlib.py --dlib-python /tmp/dlib-venv/bin/python
         [--data ../shared/data/wild68/val --data ../shared/data/faces68/val] [--weights W]
         [--limit N] [--upsample 1] [--json OUT.json]

Each method uses its own face detector, as in deployment: dlib's HOG frontal face detector (with
``--upsample`` image doublings) for dlib, the package's detector (BlazeFace, ``tracker eval
--detector``) for the tracker. A face counts as found when a detection's centre lies inside the
tight landmark box (the nearest one to its centre is used); a face not found counts as a failure
in FR@0.10 and the AUC, and is left out of the mean and median NME (``tracker eval``'s rules, the
same code scores both). ms/face is the landmark model alone (dlib's shape predictor, the
tracker's crop + model + decode); detector ms/image is printed beside it. Both run on one thread.

dlib is never a dependency of the package: it lives in its own venv, e.g.
``python -m venv /tmp/dlib-venv && /tmp/dlib-venv/bin/pip install dlib-bin
face_recognition_models numpy opencv-python-headless`` (the 68-point model,
``shape_predictor_68_face_landmarks.dat``, comes with ``face_recognition_models``; or pass
``--dlib-model``). This script runs the dlib part as a subprocess of that venv's python and
exchanges JSON with it over stdin/stdout. dlib's model was trained on the 300-W training images
(wild68/train's source), so it is in-domain on wild68/val.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Run by the dlib venv's python: reads {"items": [{"image", "box"}], "upsample", "model"} on
# stdin, writes {"dlib", "results": [{"points" | None, "det_ms", "shape_ms"}]} on stdout.
WORKER = r'''
import json, sys, time
import cv2, dlib
job = json.load(sys.stdin)
model = job["model"]
if not model:
    import face_recognition_models
    model = face_recognition_models.pose_predictor_model_location()
detector = dlib.get_frontal_face_detector()
predictor = dlib.shape_predictor(model)
out = []
for item in job["items"]:
    rgb = cv2.cvtColor(cv2.imread(item["image"], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    t0 = time.perf_counter()
    dets = detector(rgb, job["upsample"])
    det_ms = 1000 * (time.perf_counter() - t0)
    x0, y0, x1, y1 = item["box"]
    tx, ty = (x0 + x1) / 2, (y0 + y1) / 2
    best, best_d = None, float("inf")
    for d in dets:
        cx, cy = (d.left() + d.right()) / 2, (d.top() + d.bottom()) / 2
        if x0 <= cx <= x1 and y0 <= cy <= y1 and (cx - tx) ** 2 + (cy - ty) ** 2 < best_d:
            best, best_d = d, (cx - tx) ** 2 + (cy - ty) ** 2
    if best is None:
        out.append({"points": None, "det_ms": det_ms, "shape_ms": None})
        continue
    t0 = time.perf_counter()
    shape = predictor(rgb, best)
    shape_ms = 1000 * (time.perf_counter() - t0)
    out.append({"points": [[p.x, p.y] for p in shape.parts()], "det_ms": det_ms,
                "shape_ms": shape_ms})
json.dump({"dlib": dlib.__version__, "model": model, "results": out}, sys.stdout)
'''


def cpu_model() -> str:
    """The CPU's model name and its logical CPU count."""
    from tracker.engines.tuning import cpu_signature

    return f"{cpu_signature()['cpu']}, {os.cpu_count()} logical CPUs"


def load(folders: list[str], limit: int | None) -> tuple[list, list[str], list[str]]:
    """Samples, their image paths and their folders (as given)."""
    from tracker.face68 import N_POINTS
    from tracker.io.pts import Sample, find_samples, read_image, read_pts

    samples, paths, groups = [], [], []
    for folder in folders:
        for image, pts in find_samples(folder)[:limit]:
            points = read_pts(pts)
            if points.shape == (N_POINTS, 2):
                samples.append(Sample(image.stem, read_image(image), points))
                paths.append(str(image))
                groups.append(folder)
    return samples, paths, groups


def run_dlib(python: str, model: str, upsample: int, samples: list, paths: list[str]) -> dict:
    """The dlib worker's answer for every sample (one subprocess)."""
    from tracker.geometry import box_from_points

    items = []
    for s, path in zip(samples, paths, strict=True):
        b = box_from_points(s.points)
        items.append({"image": path, "box": [b.x0, b.y0, b.x1, b.y1]})
    job = json.dumps({"items": items, "upsample": upsample, "model": model})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([python, "-c", WORKER], input=job, capture_output=True, text=True,
                          env=env)
    if proc.returncode:
        sys.exit(f"error: the dlib worker failed ({python}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout)


def dlib_result(answer: dict, samples: list, groups: list[str]):  # noqa: ANN201
    """An EvalResult of dlib's points (misses: inf) and its mean detector ms per image."""
    from tracker.evaluation.metrics import nme
    from tracker.evaluation.stills import EvalResult

    n = len(samples)
    preds = np.zeros((n, 68, 2), np.float32)
    nmes, ms = np.full(n, np.inf), np.full(n, np.nan)
    for i, (s, r) in enumerate(zip(samples, answer["results"], strict=True)):
        if r["points"] is not None:
            preds[i] = r["points"]
            nmes[i] = nme(preds[i], s.points)[0]
            ms[i] = r["shape_ms"]
    gts = np.stack([s.points for s in samples])
    median = float(np.nanmedian(ms)) if np.isfinite(ms).any() else float("nan")
    result = EvalResult(nmes, preds, median, gts, ms, tuple(s.name for s in samples), tuple(groups))
    return result, np.array([r["det_ms"] for r in answer["results"]])


class TimedDetector:
    """Wraps a detector and records wall ms per call."""

    def __init__(self, inner: object) -> None:
        self.inner, self.ms = inner, []

    def detect(self, image: np.ndarray) -> list:
        t0 = time.perf_counter()
        boxes = self.inner.detect(image)
        self.ms.append(1000 * (time.perf_counter() - t0))
        return boxes


def table(rows: list[tuple[str, dict, float]]) -> list[str]:
    """Markdown rows: method, mean/median NME, FR, AUC, not found, ms/face, detector ms, offset."""
    lines = ["| method | mean NME | median NME | FR@0.10 | AUC@0.10 | faces not found | "
             "ms/face | detector ms/image | offset x / y (% IOD) |", "|---" * 9 + "|"]
    for name, s, det_ms in rows:
        lines.append(f"| {name} | {100 * s['nme_mean']:.2f} % | {100 * s['nme_median']:.2f} % | "
                     f"{100 * s['fr_010']:.2f} % | {s['auc_010']:.3f} | {s['misses']}/{s['n']} | "
                     f"{s['ms_per_face']:.2f} | {det_ms:.1f} | "
                     f"{100 * s['offset_x']:+.2f} / {100 * s['offset_y']:+.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dlib-python", required=True, help="python of a venv with dlib")
    parser.add_argument("--dlib-model", default="", help="shape_predictor_68_face_landmarks.dat "
                        "(default: face_recognition_models' copy)")
    parser.add_argument("--data", action="append", default=None,
                        help="labelled folder (repeat); default wild68/val and faces68/val")
    parser.add_argument("--weights", default=None, help="tracker model (default: embedded)")
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--upsample", type=int, default=1, help="dlib HOG image doublings")
    parser.add_argument("--limit", type=int, default=0, help="first N images per folder")
    parser.add_argument("--json", default=None, help="also write the reports here")
    args = parser.parse_args()
    folders = args.data or [str(DATA / "wild68" / "val"), str(DATA / "faces68" / "val")]

    from tracker.detect.detectors import create_detector
    from tracker.evaluation.stills import evaluate
    from tracker.landmarker import load_landmarker

    samples, paths, groups = load(folders, args.limit or None)
    if not samples:
        sys.exit(f"error: no labelled images in {', '.join(folders)}")
    answer = run_dlib(args.dlib_python, args.dlib_model, args.upsample, samples, paths)
    dlib_res, dlib_det = dlib_result(answer, samples, groups)
    detector = TimedDetector(create_detector())
    tracker_res = evaluate(samples, load_landmarker(args.weights, args.engine, threads=1),
                           detector, groups=groups)
    tracker_det = np.array(detector.ms)
    name = f"tracker {args.weights or 'default'} (BlazeFace)"
    dlib_name = f"dlib {answer['dlib']} 68-point (HOG, upsample {args.upsample})"
    print(f"# CPU: {cpu_model()}; {len(samples)} images; dlib model {answer['model']}")
    group_arr = np.array(groups, dtype=object)
    reports = {}
    for folder in [*folders, *(["all"] if len(folders) > 1 else [])]:
        mask = np.ones(len(samples), bool) if folder == "all" else group_arr == folder
        d, t = dlib_res.subset(mask).summary(), tracker_res.subset(mask).summary()
        reports[folder] = {"dlib": d, "tracker": t,
                           "dlib_detector_ms": float(np.median(dlib_det[mask])),
                           "tracker_detector_ms": float(np.median(tracker_det[mask]))}
        print(f"\n{folder} ({int(mask.sum())} faces)")
        for line in table([(dlib_name, d, reports[folder]["dlib_detector_ms"]),
                           (name, t, reports[folder]["tracker_detector_ms"])]):
            print(line)
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_model(), "reports": reports}, indent=2))


if __name__ == "__main__":
    main()
