"""The synthetic clips of ``benchmarks/video_eval.py``: which stills they are made from, and a cache.

Two sets of faces:

* ``val``: ``faces68/val`` stills (35 persons the models never trained on). The final figures
  are reported on these, and only once: nothing is tuned on them.
* ``train-select``: the *selection slice* of the training data, the persons/photos that
  :func:`tracker.training.splits.in_selection` puts in a :data:`SELECT_FRAC` split (the same
  hash and fraction ``benchmarks/gpu_session.sh`` selects checkpoints on), from
  ``faces68/train`` and ``wild68/train`` in turn. Tune here. The shipped RCN selects its
  checkpoints on this slice and the temporal model leaves it out of training
  (``temporal_train --select_frac``), so neither trained on these faces. ``wild68`` stills are
  real photos at real sizes, downscaled with area averaging so the face is at most
  :data:`MAX_FACE` px before the clip maker scales it to the clip's face sizes.

Clips are cached as ``.mp4`` + ``.npz`` under names that carry the face set, the plan and the
seed, so a changed plan never reuses stale clips.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

from tracker.geometry import box_from_points
from tracker.io.pts import Sample, find_samples, load_folder, read_image, read_pts
from tracker.training.splits import (
    HELD_OUT_PREFIX,
    SELECT_FRAC,
    group_key,
    hash_fraction,
    in_selection,
)
from tracker.training.synthvideo import PLAN, ClipMaker, ClipTruth, load_truth, save_truth, write_clip

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FACE_SETS = ("val", "train-select")
MAX_FACE = 160.0  # px: larger stills are downscaled to this face size first
# the default plan, then two sudden jumps (step response) and a slow sway
EVAL_PLAN: tuple[tuple[str, int], ...] = (*PLAN, ("jump", 15), ("jump", 15), ("drift", 45))


def _downscaled(sample: Sample) -> Sample:
    """``sample`` with its face at most :data:`MAX_FACE` px (area-averaged, points scaled about
    pixel centres)."""
    box = box_from_points(sample.points)
    k = MAX_FACE / max(box.width, box.height, 1.0)
    if k >= 1.0:
        return sample
    h, w = sample.image.shape[:2]
    size = (max(1, round(w * k)), max(1, round(h * k)))
    image = cv2.resize(sample.image, size, interpolation=cv2.INTER_AREA)
    kx, ky = size[0] / w, size[1] / h
    pts = (sample.points + 0.5) * np.array([kx, ky], np.float32) - 0.5
    return Sample(sample.name, image, pts.astype(np.float32))


def _selection(folder: Path) -> list[tuple[Path, Path]]:
    """One (image, pts) pair per group of ``folder``'s selection slice, lowest hash first."""
    firsts: dict[str, tuple[Path, Path]] = {}
    for img, pts in find_samples(folder):
        if in_selection(img.name, SELECT_FRAC) and not img.stem.startswith(HELD_OUT_PREFIX):
            firsts.setdefault(group_key(img.name), (img, pts))
    return [firsts[k] for k in sorted(firsts, key=hash_fraction)]


def pick_faces(face_set: str, n: int, seed: int) -> list[Sample]:
    """``n`` stills of ``face_set`` (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    if face_set == "val":
        samples = load_folder(DATA / "faces68" / "val")
        return [samples[int(k)] for k in rng.choice(len(samples), n, replace=False)]
    if face_set != "train-select":
        raise ValueError(f"unknown face set {face_set!r}: one of {', '.join(FACE_SETS)}")
    pools = [_selection(DATA / "faces68" / "train"), _selection(DATA / "wild68" / "train")]
    picks = [list(rng.permutation(len(p))) for p in pools]
    out = []
    for i in range(n):
        pool, order = pools[i % 2], picks[i % 2]
        img, pts = pool[int(order[(i // 2) % len(pool)])]
        out.append(_downscaled(Sample(img.stem, read_image(img), read_pts(pts))))
    return out


def plan_tag(plan: tuple[tuple[str, int], ...]) -> str:
    """A short stable name of a plan (part of the cache file names)."""
    return hashlib.sha256(repr(plan).encode()).hexdigest()[:8]


def make_clips(n: int, cache: Path, seed: int, face_set: str = "val",
               plan: tuple[tuple[str, int], ...] = EVAL_PLAN) -> list[tuple[Path, ClipTruth]]:
    """``n`` synthetic clips of ``face_set`` (cached as .mp4 + .npz)."""
    cache.mkdir(parents=True, exist_ok=True)
    stem = f"{face_set}-{plan_tag(plan)}-s{seed}"
    paths = [(cache / f"{stem}-clip{i:02d}.mp4", cache / f"{stem}-clip{i:02d}.npz")
             for i in range(n)]
    if not all(v.exists() and t.exists() for v, t in paths):
        for i, ((video, truth), sample) in enumerate(
                zip(paths, pick_faces(face_set, n, seed), strict=True)):
            if video.exists() and truth.exists():
                continue
            maker = ClipMaker(sample, np.random.default_rng([seed, i]), plan=plan)
            save_truth(write_clip(maker, video), truth)
    return [(v, load_truth(t)) for v, t in paths]
