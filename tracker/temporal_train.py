"""Training of the temporal denoising keypoint model on sequences synthesised from stills.

Each training example is the last frame of a three-frame sequence made from one labelled still:

* the face moves between frames by a random similarity (still, slow or fast motion), its shape
  drifts a little towards another person's (expression/pose change), and the tracker's final
  points of the two earlier frames carry estimation noise (now and then a larger error);
* this frame's crop is taken exactly as the track stage does it (the rotated ROI of the previous
  final points), then degraded: photometric noise, blur, JPEG, an occluder over part of the
  face, or the frame's edge cutting through it;
* the *real* RCN runs on the crop, so the model learns that network's errors and confidences;
  on top, keypoints are hidden (low confidence, random place) or moved at training time.

Targets are the exact points of the still under the same transforms. Run::

    python -m tracker.temporal_train --rcn tracker/weights/rcn_lite.pt --out tracker/weights
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tracker.data import Sample, load_folder, photometric
from tracker.roi import box_from_points, crop_affine, rotated_roi, transform_points, warp_crop
from tracker.temporal import TemporalConfig, features, save_temporal

LEFT_OUTER, RIGHT_OUTER = 36, 45


@dataclass(frozen=True)
class TemporalTrainConfig:
    """Everything that defines a temporal-model training run (saved in the JSON sidecar)."""

    rcn: str = "tracker/weights/rcn_lite.pt"
    train: str = "../shared/data/faces68/train"
    val: str = "../shared/data/faces68/val"
    out: str = "tracker/weights"
    name: str = "temporal_dkm"
    cache: str = "/tmp/temporal_cache"
    variants: int = 4  # sequences per training still
    val_variants: int = 2
    hidden: int = 256
    layers: int = 2
    steps: int = 3000
    batch: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int = 1
    limit: int = 0


@dataclass(frozen=True)
class Sequences:
    """Precomputed examples, all points in normalised crop coordinates (N, 68, 2)."""

    cur: np.ndarray
    conf: np.ndarray
    prev1: np.ndarray
    prev2: np.ndarray
    gt: np.ndarray
    occluded: np.ndarray  # (N, 68) bool: point covered by an occluder or outside the frame
    iod: np.ndarray  # (N,) inter-ocular distance of gt


def _similarity(rng: np.random.Generator, shift: float, rot_deg: float, scale: float,
                center: np.ndarray, size: float) -> np.ndarray:
    """A random 2x3 similarity about ``center``: shift in units of ``size``."""
    a = math.radians(rng.normal(0, rot_deg))
    s = math.exp(rng.normal(0, scale))
    t = rng.normal(0, shift, size=2) * size
    c, si = math.cos(a) * s, math.sin(a) * s
    rot = np.array([[c, -si], [si, c]])
    off = center - rot @ center + t
    return np.hstack([rot, off[:, None]])


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """2x3 affine ``a`` after ``b``."""
    return np.hstack([a[:, :2] @ b[:, :2], (a[:, :2] @ b[:, 2] + a[:, 2])[:, None]])


def _invert(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(m)


def _align(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``src`` points moved by the least-squares similarity onto ``dst``."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    zs = a[:, 0] + 1j * a[:, 1]
    zd = b[:, 0] + 1j * b[:, 1]
    k = np.vdot(zs, zd) / max(np.vdot(zs, zs).real, 1e-9)
    z = zs * k
    return np.stack([z.real, z.imag], 1) + md


MOTIONS = {  # shift (face sizes/frame), rotation (deg/frame), log-scale per frame
    "still": (0.004, 0.3, 0.003),
    "slow": (0.03, 1.5, 0.015),
    "fast": (0.12, 5.0, 0.05),
}


def _occlude(crop: np.ndarray, gt: np.ndarray, rng: np.random.Generator,
             textures: list[np.ndarray]) -> np.ndarray:
    """Cover part of the face with a rectangle or ellipse; returns the covered-point mask."""
    s = crop.shape[0]
    fx0, fy0 = gt.min(0)
    fx1, fy1 = gt.max(0)
    w = rng.uniform(0.25, 0.6) * (fx1 - fx0)
    h = rng.uniform(0.25, 0.6) * (fy1 - fy0)
    cx, cy = rng.uniform(fx0, fx1), rng.uniform(fy0, fy1)
    mask = np.zeros((s, s), np.uint8)
    if rng.random() < 0.5:
        cv2.rectangle(mask, (int(cx - w / 2), int(cy - h / 2)), (int(cx + w / 2), int(cy + h / 2)),
                      1, -1)
    else:
        cv2.ellipse(mask, (int(cx), int(cy)), (int(w / 2), int(h / 2)),
                    float(rng.uniform(0, 180)), 0, 360, 1, -1)
    kind = rng.random()
    if kind < 0.3:
        fill = np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), crop.shape)
    elif kind < 0.45:
        fill = rng.integers(0, 256, crop.shape, dtype=np.uint8)
    else:
        tex = textures[int(rng.integers(len(textures)))]
        y, x = (int(rng.integers(0, max(1, d - s))) for d in tex.shape[:2])
        fill = cv2.resize(tex[y:, x:], (s, s)) if min(tex.shape[:2]) > s else cv2.resize(tex, (s, s))
    crop[mask > 0] = fill[mask > 0]
    inside = np.clip(np.round(gt).astype(int), 0, s - 1)
    return mask[inside[:, 1], inside[:, 0]] > 0


def _frame_edge(crop: np.ndarray, gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The frame's edge cuts through the face: pixels beyond it replicate the edge (as decoding
    warps do); returns the mask of points beyond the edge."""
    fx0, fy0 = gt.min(0)
    fx1, fy1 = gt.max(0)
    side = int(rng.integers(4))
    cut = rng.uniform(0.1, 0.45)
    if side == 0:  # left edge at x = e
        e = int(fx0 + cut * (fx1 - fx0))
        if e > 0:
            crop[:, :e] = crop[:, e : e + 1]
        return gt[:, 0] < e
    if side == 1:
        e = int(fx1 - cut * (fx1 - fx0))
        if e < crop.shape[1] - 1:
            crop[:, e + 1 :] = crop[:, e : e + 1]
        return gt[:, 0] > e
    if side == 2:
        e = int(fy0 + cut * (fy1 - fy0))
        if e > 0:
            crop[:e] = crop[e : e + 1]
        return gt[:, 1] < e
    e = int(fy1 - cut * (fy1 - fy0))
    if e < crop.shape[0] - 1:
        crop[e + 1 :] = crop[e : e + 1]
    return gt[:, 1] > e


def make_sequence(sample: Sample, other: np.ndarray, rng: np.random.Generator, size: int,
                  textures: list[np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One example: the degraded crop of frame t and its points (crop pixels)."""
    p = sample.points.astype(np.float64)
    box = box_from_points(p)
    face = max(box.width, box.height, 1.0)
    center = np.array(box.center)
    # frame t: the still, tilted; earlier frames: undo the per-frame motion
    tilt = _similarity(rng, 0.0, 15.0, 0.0, center, face)
    motion = str(rng.choice(list(MOTIONS), p=[0.3, 0.4, 0.3]))
    sh, rot, sc = MOTIONS[motion]
    m1 = _similarity(rng, sh, rot, sc, center, face)  # t-1 -> t
    m2 = _compose(_similarity(rng, sh * 0.3, rot * 0.3, sc * 0.3, center, face), m1)  # t-2 -> t-1
    shape_q = _align(other.astype(np.float64), p)
    frames = []
    for k, m in ((1, m1), (2, _compose(m1, m2))):
        lam = rng.uniform(0.0, 0.12) * k
        shape = p + lam * (shape_q - p)
        frames.append(transform_points(_compose(tilt, _invert(m)), shape).astype(np.float64))
    # the tracker's estimates of the earlier frames
    err = rng.uniform(0.003, 0.02) * face if rng.random() < 0.85 else rng.uniform(0.02, 0.06) * face
    est = []
    for gt_prev in frames:
        noisy = gt_prev + rng.normal(0, err, gt_prev.shape)
        if rng.random() < 0.1:
            noisy += rng.normal(0, 2 * err, 2)
        est.append(noisy)
    roi_scale = rng.uniform(1.2, 1.6)
    c, side, angle = rotated_roi(est[0], roi_scale)
    to_crop = crop_affine(c, side, angle, size)
    full = _compose(to_crop, tilt)
    crop = warp_crop(sample.image, full, size)
    gt = transform_points(full, p)
    hidden = np.zeros(len(p), bool)
    if rng.random() < 0.45:
        hidden |= _occlude(crop, gt, rng, textures)
    if rng.random() < 0.1:
        hidden |= _frame_edge(crop, gt, rng)
    if rng.random() < 0.7:
        crop = photometric(crop, rng)
    pts = {
        "gt": gt,
        "prev1": transform_points(to_crop, est[0]),
        "prev2": transform_points(to_crop, est[1]),
        "occluded": hidden,
    }
    return crop, pts


def synthesise(samples: list[Sample], variants: int, seed: int, size: int
               ) -> dict[str, np.ndarray]:
    """``variants`` degraded crops per still with their points (crop pixels); RCN-independent."""
    rng = np.random.default_rng(seed)
    textures = [s.image for s in samples[:: max(1, len(samples) // 200)]]
    cols: dict[str, list[np.ndarray]] = {"crops": [], "gt": [], "prev1": [], "prev2": [],
                                         "occluded": []}
    for _ in range(variants):
        for s in samples:
            other = samples[int(rng.integers(len(samples)))].points
            crop, pts = make_sequence(s, other, rng, size, textures)
            cols["crops"].append(crop)
            for k, v in pts.items():
                cols[k].append(v)
    return {k: np.stack(v) for k, v in cols.items()}


def run_rcn(rcn_path: str, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RCN points (crop pixels) and confidences for a stack of uint8 crops."""
    import torch

    from tracker import heatmap
    from tracker.data import Preprocess
    from tracker.model import load_checkpoint

    ckpt = load_checkpoint(rcn_path)
    pre = Preprocess(ckpt.net.size, ckpt.net.in_channels,
                     bool(ckpt.meta.get("preprocess", {}).get("lcn")))
    cur, conf = [], []
    with torch.inference_mode():
        for i in range(0, len(crops), 128):
            logits = ckpt.model(torch.from_numpy(pre(crops[i : i + 128]))).numpy()
            p, c = heatmap.decode(np.ascontiguousarray(logits, dtype=np.float32))
            cur.append(p)
            conf.append(c)
    return np.concatenate(cur), np.concatenate(conf).astype(np.float32)


def to_sequences(arrays: dict[str, np.ndarray], cur: np.ndarray, conf: np.ndarray,
                 size: int) -> Sequences:
    """Everything in normalised crop coordinates (origin at the centre, unit = crop side)."""
    half = (size - 1) / 2.0

    def norm(x: np.ndarray) -> np.ndarray:
        return ((x - half) / size).astype(np.float32)

    gt = norm(arrays["gt"])
    iod = np.linalg.norm(gt[:, LEFT_OUTER] - gt[:, RIGHT_OUTER], axis=1)
    return Sequences(norm(cur), conf, norm(arrays["prev1"]), norm(arrays["prev2"]), gt,
                     arrays["occluded"], iod.astype(np.float32))


def corrupt(seq: Sequences, idx: np.ndarray, rng: np.random.Generator
            ) -> tuple[np.ndarray, ...]:
    """A training batch: earlier points given the network's error, keypoints hidden or moved,
    some histories removed."""
    cur = seq.cur[idx].copy()
    conf = seq.conf[idx].copy()
    prev1, prev2 = seq.prev1[idx].copy(), seq.prev2[idx].copy()
    n, k, _ = cur.shape
    # the tracker's earlier points come from the same network on the same face: they share
    # much of its present error (otherwise the model learns to copy them and lags/sticks)
    shared = (rng.random((n, 1, 1)) < 0.75) * rng.uniform(0.3, 1.0, (n, 1, 1))
    rcn_err = (cur - seq.gt[idx]) * shared.astype(np.float32)
    prev1 += rcn_err
    prev2 += rcn_err
    # spatially coherent corruption: points near a random face point
    hit_p = rng.random(n) < 0.35
    anchor = seq.gt[idx, rng.integers(0, k, n)]
    dist = np.linalg.norm(seq.gt[idx] - anchor[:, None], axis=2)
    radius = rng.uniform(0.05, 0.3, n)[:, None]
    hit = hit_p[:, None] & (dist < radius)
    hide = hit & (rng.random((n, 1)) < 0.5)
    move = hit & ~hide
    cur[hide] = rng.uniform(-0.5, 0.5, (int(hide.sum()), 2)).astype(np.float32)
    conf[hide] = rng.uniform(0.0, 0.15, int(hide.sum())).astype(np.float32)
    cur[move] += rng.normal(0, 0.08, (int(move.sum()), 2)).astype(np.float32)
    has_prev = np.ones(n, np.float32)
    none = rng.random(n) < 0.1
    prev1[none] = cur[none]
    prev2[none] = cur[none]
    has_prev[none] = 0.0
    one = ~none & (rng.random(n) < 0.05)
    prev2[one] = prev1[one]
    return cur, conf, prev1, prev2, has_prev


def _nme(pred: np.ndarray, gt: np.ndarray, iod: np.ndarray) -> np.ndarray:
    """Per-point error over inter-ocular distance ``(N, K)``."""
    return np.linalg.norm(pred - gt, axis=2) / iod[:, None]


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cached(cfg: TemporalTrainConfig, split: str, samples: list[Sample], variants: int,
            seed: int, rcn_sha: str, size: int) -> Sequences:
    """Crops cached per (split, variants, seed); RCN outputs cached per RCN weights."""
    cache = Path(cfg.cache)
    cache.mkdir(parents=True, exist_ok=True)
    base = f"{split}-{variants}-{seed}-{len(samples)}-{size}"
    crops_path = cache / f"{base}-crops.npz"
    rcn_path = cache / f"{base}-rcn-{rcn_sha[:12]}.npz"
    if crops_path.exists():
        with np.load(crops_path) as z:
            arrays = {k: z[k] for k in z.files}
    else:
        arrays = synthesise(samples, variants, seed, size)
        np.savez(crops_path, **arrays)
    if rcn_path.exists():
        with np.load(rcn_path) as z:
            cur, conf = z["cur"], z["conf"]
    else:
        cur, conf = run_rcn(cfg.rcn, arrays["crops"])
        np.savez(rcn_path, cur=cur, conf=conf)
    return to_sequences(arrays, cur, conf, size)


def evaluate(model: object, seq: Sequences) -> dict[str, float]:
    """Mean NME (%) of the RCN input and of the model, on all and on occluded points.

    ``model`` maps the :func:`features` arguments to points (torch module or NumPy denoiser).
    """
    has = np.ones(len(seq.cur), np.float32)
    out = model(seq.cur, seq.conf, seq.prev1, seq.prev2, has)  # type: ignore[operator]
    before = _nme(seq.cur, seq.gt, seq.iod)
    after = _nme(out, seq.gt, seq.iod)
    occ = seq.occluded
    occ_faces = occ.any(1)
    return {
        "nme_rcn": float(before.mean() * 100),
        "nme_temporal": float(after.mean() * 100),
        "nme_rcn_occluded_points": float(before[occ].mean() * 100) if occ.any() else 0.0,
        "nme_temporal_occluded_points": float(after[occ].mean() * 100) if occ.any() else 0.0,
        "nme_rcn_clean_faces": float(before[~occ_faces].mean() * 100),
        "nme_temporal_clean_faces": float(after[~occ_faces].mean() * 100),
    }


def build_net(tc: TemporalConfig) -> Any:
    """The torch MLP (residual head initialised to zero: the model starts as the identity)."""
    from torch import nn

    layers: list[nn.Module] = []
    width = tc.n_inputs
    for _ in range(tc.layers):
        layers += [nn.Linear(width, tc.hidden), nn.ReLU()]
        width = tc.hidden
    head = nn.Linear(width, tc.n_points * 2)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return nn.Sequential(*layers, head)


def forward(net: Any, cur: np.ndarray, conf: np.ndarray, prev1: np.ndarray, prev2: np.ndarray,
            has_prev: np.ndarray) -> Any:
    """Corrected points as a torch tensor ``(N, K, 2)`` (differentiable)."""
    import torch

    x = torch.from_numpy(features(cur, conf, prev1, prev2, has_prev))
    return torch.from_numpy(cur) + net(x).view(cur.shape)


def loss_fn(out: Any, gt: np.ndarray, iod: np.ndarray) -> Any:
    """Mean point error over the inter-ocular distance."""
    import torch

    return ((out - torch.from_numpy(gt)).norm(dim=2) / torch.from_numpy(iod)[:, None]).mean()


def fit(net: Any, seq: Sequences, steps: int, batch: int, lr: float, weight_decay: float,
        rng: np.random.Generator, log: Callable[[int, float], None] | None = None) -> float:
    """Train ``net`` on corrupted batches of ``seq``; returns the last batch loss."""
    import torch

    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps,
                                                pct_start=max(0.05, 2.5 / steps))
    loss_value = float("nan")
    net.train()
    for step in range(1, steps + 1):
        idx = rng.integers(0, len(seq.cur), batch)
        loss = loss_fn(forward(net, *corrupt(seq, idx, rng)), seq.gt[idx], seq.iod[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_value = float(loss.detach())
        if log is not None and (step % 1000 == 0 or step == steps):
            log(step, loss_value)
    return loss_value


def export_weights(net: Any) -> list[np.ndarray]:
    """``[W0, b0, W1, b1, ...]`` of the MLP's linear layers, W as (in, out) for NumPy."""
    from torch import nn

    weights = []
    for m in net:
        if isinstance(m, nn.Linear):
            weights += [m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy()]
    return weights


def train(cfg: TemporalTrainConfig) -> dict[str, object]:
    """Build (or load cached) sequences, train, save weights + sidecar; returns the sidecar."""
    import torch

    from tracker.temporal import TemporalDenoiser

    t0 = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rcn_sha = _sha256(cfg.rcn)
    limit = cfg.limit or None
    train_s = load_folder(cfg.train, limit)
    val_s = load_folder(cfg.val, limit)
    from tracker.model import load_checkpoint

    size = load_checkpoint(cfg.rcn).net.size
    seq = _cached(cfg, "train", train_s, cfg.variants, cfg.seed, rcn_sha, size)
    val = _cached(cfg, "val", val_s, cfg.val_variants, cfg.seed + 1, rcn_sha, size)
    print(f"sequences: train {len(seq.cur)} val {len(val.cur)} "
          f"({time.perf_counter() - t0:.0f}s)", flush=True)
    tc = TemporalConfig(hidden=cfg.hidden, layers=cfg.layers)
    net = build_net(tc)
    fit(net, seq, cfg.steps, cfg.batch, cfg.lr, cfg.weight_decay, np.random.default_rng(cfg.seed),
        log=lambda step, loss: print(f"step {step} loss {loss * 100:.2f}% "
                                     f"({time.perf_counter() - t0:.0f}s)", flush=True))
    weights = export_weights(net)
    denoiser = TemporalDenoiser(tc, weights)
    metrics = evaluate(denoiser, val)
    meta = {
        "trained_with": asdict(cfg),
        "rcn_weights": cfg.rcn,
        "rcn_sha256": rcn_sha,
        "train_sequences": int(len(seq.cur)),
        "val_sequences": int(len(val.cur)),
        "val": metrics,
        "seconds": round(time.perf_counter() - t0, 1),
        "inputs": "current RCN points + confidence, previous two final points (t-1, t-2), "
                  "in the current crop's normalised coordinates",
    }
    out_path = Path(cfg.out) / f"{cfg.name}.npz"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_temporal(out_path, tc, weights, meta)
    print(json.dumps(metrics, indent=2), flush=True)
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(description="train the temporal denoising keypoint model")
    for f, v in asdict(TemporalTrainConfig()).items():
        parser.add_argument(f"--{f}", type=type(v), default=v)
    train(TemporalTrainConfig(**vars(parser.parse_args())))


if __name__ == "__main__":
    main()
