"""Short clips synthesised from labelled stills, for training the temporal model.

A clip is ``frames`` consecutive frames of one still moving along a random affine trajectory
(still, slow or fast: shift, rotation, zoom and a little shear/aspect change standing in for
pose changes). Each frame is cropped exactly as the track stage crops it, from the rotated ROI
of the tracker's estimate of the previous frame (truth plus estimation noise), then degraded:
photometric noise, blur, JPEG, an occluder that stays on the face for a few frames, or the
frame's edge cutting through the face. The real RCN then runs on every crop, so the model
learns that network's errors and confidences.

Everything is returned in *normalised crop coordinates* (origin at the crop centre, unit = crop
side), the frame of reference the temporal model works in; ``step`` maps points of frame k-1's
crop into frame k's crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tracker.face68 import OUTER_EYE_CORNERS
from tracker.geometry import box_from_points, crop_affine, rotated_roi, transform_points, warp_crop
from tracker.io.pts import Sample
from tracker.training.data import photometric

DATA_VERSION = 2  # bump when the synthesis changes (names the cached crops)
MOTIONS = {  # shift (face sizes/frame), rotation (deg/frame), log-zoom and shear per frame
    "still": (0.004, 0.3, 0.003, 0.002),
    "slow": (0.03, 1.5, 0.015, 0.01),
    "fast": (0.12, 5.0, 0.05, 0.03),
}


@dataclass(frozen=True)
class Clips:
    """N clips of T frames; points normalised to each frame's crop."""

    cur: np.ndarray  # (N, T, K, 2) RCN points
    conf: np.ndarray  # (N, T, K) RCN confidences
    gt: np.ndarray  # (N, T, K, 2) true points
    prev1: np.ndarray  # (N, K, 2) tracker estimate of the frame before the clip, in crop 0
    prev2: np.ndarray  # (N, K, 2) ... and of the frame before that
    step: np.ndarray  # (N, T, 2, 3) crop k-1 -> crop k (identity for k = 0)
    occluded: np.ndarray  # (N, T, K) point under an occluder or outside the frame
    iod: np.ndarray  # (N, T) inter-ocular distance of gt

    def __len__(self) -> int:
        return len(self.cur)


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """2x3 affine ``a`` after ``b``."""
    return np.hstack([a[:, :2] @ b[:, :2], (a[:, :2] @ b[:, 2] + a[:, 2])[:, None]])


def _affine_about(center: np.ndarray, lin: np.ndarray, shift: np.ndarray) -> np.ndarray:
    return np.hstack([lin, (center - lin @ center + shift)[:, None]])


def _motion(rng: np.random.Generator, kind: str, face: float, scale: float = 1.0) -> np.ndarray:
    """A random per-frame 2x2 linear part and shift (as a 2x3 about the origin)."""
    sh, rot, zoom, shear = (v * scale for v in MOTIONS[kind])
    a = math.radians(rng.normal(0, rot))
    s = math.exp(rng.normal(0, zoom))
    r = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) * s
    lin = r @ (np.eye(2) + rng.normal(0, shear, (2, 2)))
    return np.hstack([lin, rng.normal(0, sh, (2, 1)) * face])


def _occluder(rng: np.random.Generator, textures: list[np.ndarray]) -> dict[str, object]:
    """Occluder placement relative to the face box (stays put on the face across frames)."""
    tex = textures[int(rng.integers(len(textures)))]
    if rng.random() < 0.5:  # something over the face
        w, h = rng.uniform(0.25, 0.6, 2)
        cx, cy = rng.uniform(0, 1, 2)
    else:  # something big coming in from a side (a hand, a shoulder, a microphone)
        w, h = rng.uniform(0.5, 1.0, 2)
        side = int(rng.integers(4))
        depth = rng.uniform(-0.4, 0.3)  # how far its centre is inside the face's edge
        along = rng.uniform(0.1, 0.9)
        cx, cy = [(depth, along), (1 - depth, along), (along, depth), (along, 1 - depth)][side]
    return {"w": w, "h": h, "cx": cx, "cy": cy, "ellipse": rng.random() < 0.5,
            "kind": rng.random(), "colour": rng.integers(0, 256, 3, dtype=np.uint8), "tex": tex,
            "angle": float(rng.uniform(0, 180))}


def _occlude(crop: np.ndarray, gt: np.ndarray, occ: dict[str, object],
             rng: np.random.Generator) -> np.ndarray:
    """Paint the occluder over the face in ``crop``; returns the covered-point mask."""
    s = crop.shape[0]
    (fx0, fy0), (fx1, fy1) = gt.min(0), gt.max(0)
    w, h = float(occ["w"]) * (fx1 - fx0), float(occ["h"]) * (fy1 - fy0)
    cx, cy = fx0 + float(occ["cx"]) * (fx1 - fx0), fy0 + float(occ["cy"]) * (fy1 - fy0)
    mask = np.zeros((s, s), np.uint8)
    if occ["ellipse"]:
        cv2.ellipse(mask, (int(cx), int(cy)), (max(1, int(w / 2)), max(1, int(h / 2))),
                    float(occ["angle"]), 0, 360, 1, -1)
    else:
        cv2.rectangle(mask, (int(cx - w / 2), int(cy - h / 2)), (int(cx + w / 2), int(cy + h / 2)),
                      1, -1)
    kind = float(occ["kind"])
    if kind < 0.3:  # flat colour with a little grain
        grain = rng.normal(0, 8, crop.shape)
        fill = np.clip(np.asarray(occ["colour"], np.float32) + grain, 0, 255).astype(np.uint8)
    elif kind < 0.45:
        fill = rng.integers(0, 256, crop.shape, dtype=np.uint8)
    else:
        fill = cv2.resize(np.asarray(occ["tex"]), (s, s))
    crop[mask > 0] = fill[mask > 0]
    inside = np.clip(np.round(gt).astype(int), 0, s - 1)
    return mask[inside[:, 1], inside[:, 0]] > 0


def _frame_edge(crop: np.ndarray, gt: np.ndarray, side: int, cut: float) -> np.ndarray:
    """The frame's edge cuts ``cut`` of the face from ``side`` (0 left, 1 right, 2 top,
    3 bottom): pixels beyond it replicate the edge, as crop warps do; returns points beyond."""
    (fx0, fy0), (fx1, fy1) = gt.min(0), gt.max(0)
    last = crop.shape[0] - 1
    if side == 0:
        e = int(np.clip(fx0 + cut * (fx1 - fx0), 0, last))
        crop[:, :e] = crop[:, e : e + 1]
        return gt[:, 0] < e
    if side == 1:
        e = int(np.clip(fx1 - cut * (fx1 - fx0), 0, last))
        crop[:, e + 1 :] = crop[:, e : e + 1]
        return gt[:, 0] > e
    if side == 2:
        e = int(np.clip(fy0 + cut * (fy1 - fy0), 0, last))
        crop[:e] = crop[e : e + 1]
        return gt[:, 1] < e
    e = int(np.clip(fy1 - cut * (fy1 - fy0), 0, last))
    crop[e + 1 :] = crop[e : e + 1]
    return gt[:, 1] > e


def make_clip(sample: Sample, rng: np.random.Generator, size: int, frames: int,
              textures: list[np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Crops ``(T, S, S, 3)`` of one clip and its points (crop pixels) and crop steps."""
    p = sample.points.astype(np.float64)
    box = box_from_points(p)
    face = max(box.width, box.height, 1.0)
    center = np.array(box.center)
    kind = str(rng.choice(list(MOTIONS), p=[0.3, 0.4, 0.3]))
    base = _motion(rng, kind, face)
    a = math.radians(rng.normal(0, 15))
    tilt = _affine_about(center, np.array([[math.cos(a), -math.sin(a)],
                                           [math.sin(a), math.cos(a)]]), np.zeros(2))
    # still -> frame transforms of frames -2 .. T-1 (a constant motion with per-frame wobble)
    moves = [tilt]
    for _ in range(frames + 1):
        wobble = _motion(rng, kind, face, 0.3)
        inc = _compose(wobble, base)
        c = transform_points(moves[-1], center[None])[0].astype(np.float64)
        moves.append(_affine_about(c, inc[:, :2], inc[:, 2]))
        moves[-1] = _compose(moves[-1], moves[-2])
    err = rng.uniform(0.003, 0.02) * face if rng.random() < 0.85 else rng.uniform(0.02, 0.06) * face
    est = [transform_points(m, p) + rng.normal(0, err, p.shape) for m in moves]
    roi_scale = rng.uniform(1.2, 1.6)
    occ = _occluder(rng, textures) if rng.random() < 0.4 else None
    occ_from = int(rng.integers(0, frames))
    occ_to = int(rng.integers(occ_from + 1, frames + 1))
    edge = (int(rng.integers(4)), rng.uniform(0.1, 0.45)) if rng.random() < 0.1 else None
    crops, gts, hidden, to_crops = [], [], [], []
    for k in range(frames):
        c, side, angle = rotated_roi(est[k + 1], roi_scale)  # ROI from frame k-1's estimate
        to_crop = crop_affine(c, side, angle, size)
        full = _compose(to_crop, moves[k + 2])
        crop = warp_crop(sample.image, full, size)
        gt = transform_points(full, p)
        mask = np.zeros(len(p), bool)
        if occ is not None and occ_from <= k < occ_to:
            mask |= _occlude(crop, gt, occ, rng)
        if edge is not None:
            mask |= _frame_edge(crop, gt, *edge)
        if rng.random() < 0.7:
            crop = photometric(crop, rng)
        crops.append(crop)
        gts.append(gt)
        hidden.append(mask)
        to_crops.append(to_crop)
    steps = [np.hstack([np.eye(2), np.zeros((2, 1))])]
    for k in range(1, frames):
        steps.append(_compose(to_crops[k], cv2.invertAffineTransform(to_crops[k - 1])))
    return np.stack(crops), {
        "gt": np.stack(gts),
        "prev1": transform_points(to_crops[0], est[1]),
        "prev2": transform_points(to_crops[0], est[0]),
        "step": np.stack(steps),
        "occluded": np.stack(hidden),
    }


def synthesise(samples: list[Sample], variants: int, frames: int, seed: int, size: int
               ) -> dict[str, np.ndarray]:
    """``variants`` clips per still (RCN-independent part, cacheable)."""
    rng = np.random.default_rng(seed)
    textures = [s.image for s in samples[:: max(1, len(samples) // 200)]]
    cols: dict[str, list[np.ndarray]] = {"crops": [], "gt": [], "prev1": [], "prev2": [],
                                         "step": [], "occluded": []}
    for _ in range(variants):
        for s in samples:
            crops, pts = make_clip(s, rng, size, frames, textures)
            cols["crops"].append(crops)
            for k, v in pts.items():
                cols[k].append(v)
    return {k: np.stack(v) for k, v in cols.items()}


def run_rcn(rcn_path: str | Path, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RCN points (crop pixels, calibrated as at run time) and confidences for uint8 crops."""
    import torch

    from tracker.models import heatmap
    from tracker.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(rcn_path)
    pre = ckpt.preprocess
    offset = ckpt.point_offset if ckpt.point_offset is not None else 0.0  # as the landmarker adds
    lead = crops.shape[:-3]
    flat = crops.reshape(-1, *crops.shape[-3:])
    cur, conf = [], []
    with torch.inference_mode():
        for i in range(0, len(flat), 128):
            logits = ckpt.model(torch.from_numpy(pre(flat[i : i + 128]))).numpy()
            pts, c = heatmap.decode(np.ascontiguousarray(logits, dtype=np.float32))
            cur.append(pts + offset)
            conf.append(c)
    k = cur[0].shape[1]
    return (np.concatenate(cur).reshape(*lead, k, 2),
            np.concatenate(conf).astype(np.float32).reshape(*lead, k))


def normalise_affine(m: np.ndarray, size: int) -> np.ndarray:
    """A crop-pixel affine (..., 2, 3) expressed in normalised crop coordinates."""
    half = (size - 1) / 2.0
    lin = m[..., :2]
    t = (lin @ np.array([half, half]) + m[..., 2] - half) / size
    return np.concatenate([lin, t[..., None]], axis=-1).astype(np.float32)


def to_clips(arrays: dict[str, np.ndarray], cur: np.ndarray, conf: np.ndarray,
             size: int) -> Clips:
    """Crop-pixel arrays and RCN outputs -> normalised :class:`Clips`."""
    half = (size - 1) / 2.0

    def norm(x: np.ndarray) -> np.ndarray:
        return ((x - half) / size).astype(np.float32)

    gt = norm(arrays["gt"])
    a, b = OUTER_EYE_CORNERS
    iod = np.linalg.norm(gt[..., a, :] - gt[..., b, :], axis=-1)
    return Clips(norm(cur), conf.astype(np.float32), gt, norm(arrays["prev1"]),
                 norm(arrays["prev2"]), normalise_affine(arrays["step"], size),
                 arrays["occluded"].astype(bool), iod.astype(np.float32))
