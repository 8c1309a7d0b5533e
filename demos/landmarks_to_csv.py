"""Landmarks of a video as one CSV row per face and frame, with the Python API.

    python demos/landmarks_to_csv.py VIDEO OUT.csv [--max-frames N] [--engine E]

Columns: frame, time, face, presence, then x0, y0 ... x67, y67 in frame pixels (iBUG order).
"""

from __future__ import annotations

import argparse
import csv
import sys

from tracker import Tracker, TrackerError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video")
    ap.add_argument("out")
    ap.add_argument("--max-frames", type=int, default=0)
    ap.add_argument("--engine", default="auto")
    a = ap.parse_args(argv)
    header = ["frame", "time", "face", "presence"]
    header += [f"{axis}{i}" for i in range(68) for axis in "xy"]
    rows = 0
    try:
        with Tracker.from_config(None, engine=a.engine) as tracker, \
                open(a.out, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for tracked in tracker.track(a.video):
                for face in tracked.faces:
                    writer.writerow([tracked.index, f"{tracked.time:.4f}", face.id,
                                     f"{face.presence:.3f}",
                                     *(f"{v:.2f}" for v in face.points.ravel())])
                    rows += 1
                if a.max_frames and tracked.index + 1 >= a.max_frames:
                    break
    except TrackerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{rows} rows written to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
