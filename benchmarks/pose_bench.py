"""Head-pose cost per face: ``estimate_pose`` with its Numba Levenberg-Marquardt refinement
against the same function refining with OpenCV's ``solvePnPRefineLM`` (as before), on the
landmarks of a real clip, in turns.

    python benchmarks/pose_bench.py [--clip CLIP] [--rounds 5]

Prints microseconds per face for each, the largest difference of the poses and the CPU model.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from tracker.outputs import headpose

CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos" / "short_hamilton_clip.mp4"


def opencv_refine(obj: np.ndarray, img: np.ndarray, cam: np.ndarray, rvec: np.ndarray,
                  tvec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The refinement ``estimate_pose`` used before: OpenCV's LM."""
    r, t = cv2.solvePnPRefineLM(obj.reshape(-1, 1, 3), img.reshape(-1, 1, 2), cam, None,
                                rvec.reshape(3, 1).copy(), tvec.reshape(3, 1).copy())
    return r.reshape(3), t.reshape(3)


def cpu_name() -> str:
    """The CPU's model name (:func:`tracker.engines.tuning.cpu_signature`)."""
    from tracker.engines.tuning import cpu_signature

    return str(cpu_signature()["cpu"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default=str(CLIP))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from tracker.cli import main as tracker_main

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "points.jsonl"
        if tracker_main(["run", args.clip, "--jsonl", str(out)]) != 0:
            raise SystemExit("tracker run failed")
        recs = [json.loads(line) for line in out.read_text().splitlines()]
    import av

    with av.open(args.clip) as c:
        w, h = c.streams.video[0].width, c.streams.video[0].height
    faces = [np.array(f["points"], np.float32) for r in recs for f in r["faces"]]
    numba_refine = headpose.refine_pose
    variants = {"opencv LM": opencv_refine, "numba LM": numba_refine}
    headpose.estimate_pose(faces[0], w, h)  # load the kernel
    times: dict[str, list[float]] = {k: [] for k in variants}
    poses: dict[str, list] = {}
    for _ in range(args.rounds):
        for name, refine in variants.items():
            headpose.refine_pose = refine
            t0 = time.perf_counter()
            poses[name] = [headpose.estimate_pose(p, w, h) for p in faces]
            times[name].append((time.perf_counter() - t0) / len(faces) * 1e6)
    headpose.refine_pose = numba_refine
    dr = max(float(np.abs(a.rvec - b.rvec).max()) for a, b in
             zip(poses["opencv LM"], poses["numba LM"], strict=True) if a is not None)
    dang = max(max(abs(a.yaw - b.yaw), abs(a.pitch - b.pitch), abs(a.roll - b.roll)) for a, b in
               zip(poses["opencv LM"], poses["numba LM"], strict=True) if a is not None)
    print(f"cpu {cpu_name()}; {len(faces)} faces of {args.clip}")
    for name, ts in times.items():
        print(f"estimate_pose with {name}: {np.median(ts):.1f} us per face "
              f"(rounds {min(ts):.1f}-{max(ts):.1f})")
    print(f"largest difference: rvec {dr:.1e} rad, angles {dang:.1e} deg")


if __name__ == "__main__":
    main()
