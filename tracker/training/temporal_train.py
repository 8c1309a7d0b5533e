"""Training of the temporal denoising keypoint model on clips synthesised from stills.

The model is trained the way it runs: *closed loop*. Over each short clip
(:mod:`tracker.training.temporal_data`) its own corrected points of frame k-1 (and k-2), mapped into
frame k's crop, are its history at frame k, and the loss (mean point error over the
inter-ocular distance, on every frame) is backpropagated through the whole clip. So it learns
how much to trust a history that carries its own errors, and cannot learn a feedback that
oscillates (which shows up as jitter on video).

The history before the clip is the tracker's estimate of the two earlier frames: truth plus
noise plus a share of the network's present error (the same face under the same network has
much the same error). On top of the real RCN outputs, keypoints are hidden (low confidence,
random place) or moved, and some clips start without history. Run::

    python -m tracker.training.temporal_train --rcn tracker/weights/rcn_lite.pt --out tracker/weights
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tracker.io.pts import Sample, load_folder
from tracker.models.checkpoint import file_sha256
from tracker.temporal.denoiser import TemporalConfig, TemporalDenoiser, save_temporal
from tracker.training.splits import SELECT_FRAC, check_not_held_out, in_selection, load_kept
from tracker.training.temporal_data import DATA_VERSION, Clips, run_rcn, synthesise, to_clips


@dataclass(frozen=True)
class TemporalTrainConfig:
    """Everything that defines a temporal-model training run (saved in the JSON sidecar)."""

    rcn: str = "tracker/weights/rcn_lite.pt"
    # training folders (InfAnFace ``test_`` files are left out; held-out folder names refused)
    train: tuple[str, ...] = ("../shared/data/faces68/train",)
    # reported after training (never used to choose anything)
    val: tuple[str, ...] = ("../shared/data/faces68/val",)
    out: str = "tracker/weights"
    name: str = "temporal_dkm"
    cache: str = "/tmp/temporal_cache"
    variants: int = 2  # clips per training still
    val_variants: int = 1
    frames: int = 4  # frames per clip
    hidden: int = 256
    layers: int = 2
    blend: float = 0.25  # share of the correction applied at run time (see TemporalConfig)
    steps: int = 3000
    batch: int = 64  # clips per step
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int = 1
    limit: int = 0
    # the selection slice of the training folders (splits.in_selection: the persons / photos the
    # RCN selects checkpoints on and benchmarks/video_clips.py's train-select clips come from) is
    # left out, so those clips are held out from both models; 0 trains on every still
    select_frac: float = SELECT_FRAC

    def __post_init__(self) -> None:
        for name in ("train", "val"):
            v = getattr(self, name)
            object.__setattr__(self, name, (str(v),) if isinstance(v, str | Path) else tuple(v))


@dataclass(frozen=True)
class Batch:
    """Inputs of one closed-loop pass (numpy, normalised crop coordinates)."""

    cur: np.ndarray  # (B, T, K, 2)
    conf: np.ndarray  # (B, T, K)
    prev1: np.ndarray  # (B, K, 2) history of frame 0
    prev2: np.ndarray
    fresh: np.ndarray  # (B,) bool: the clip starts without history
    step: np.ndarray  # (B, T, 2, 3)
    gt: np.ndarray
    iod: np.ndarray


def make_batch(clips: Clips, idx: np.ndarray, rng: np.random.Generator | None,
               share: float = 0.65) -> Batch:
    """Clips ``idx`` with history errors and (when ``rng`` is given) random corruption.

    Without ``rng`` (evaluation) every history carries ``share`` of the network's error.
    """
    cur = clips.cur[idx].copy()
    conf = clips.conf[idx].copy()
    gt = clips.gt[idx]
    b, t, k, _ = cur.shape
    if rng is None:
        shared = np.full((b, 1, 1), share, np.float32)
        fresh = np.zeros(b, bool)
    else:
        shared = ((rng.random((b, 1, 1)) < 0.75) * rng.uniform(0.3, 1.0, (b, 1, 1)))
        fresh = rng.random(b) < 0.1
    rcn_err = (cur[:, 0] - gt[:, 0]) * shared.astype(np.float32)
    prev1 = clips.prev1[idx] + rcn_err
    prev2 = clips.prev2[idx] + rcn_err
    if rng is not None:  # spatially coherent hiding/moving of RCN points, per frame
        hit = rng.random((b, t, 1)) < 0.3
        anchor = gt[np.arange(b)[:, None], np.arange(t)[None], rng.integers(0, k, (b, t))]
        near = np.linalg.norm(gt - anchor[:, :, None], axis=3) < rng.uniform(0.05, 0.3, (b, t, 1))
        hit = hit & near
        hide = hit & (rng.random((b, t, 1)) < 0.5)
        move = hit & ~hide
        cur[hide] = rng.uniform(-0.5, 0.5, (int(hide.sum()), 2))
        conf[hide] = rng.uniform(0.0, 0.15, int(hide.sum()))
        cur[move] += rng.normal(0, 0.08, (int(move.sum()), 2))
    prev1[fresh] = cur[fresh, 0]
    prev2[fresh] = cur[fresh, 0]
    return Batch(cur.astype(np.float32), conf.astype(np.float32), prev1.astype(np.float32),
                 prev2.astype(np.float32), fresh, clips.step[idx], gt, clips.iod[idx])


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


def forward(net: Any, cur: Any, conf: Any, prev1: Any, prev2: Any, has_prev: Any,
            blend: float = 1.0) -> Any:
    """Corrected points ``(N, K, 2)`` as a differentiable tensor (inputs: arrays or tensors)."""
    import torch

    t = [torch.as_tensor(x, dtype=torch.float32) for x in (cur, conf, prev1, prev2, has_prev)]
    n = t[0].shape[0]
    x = torch.cat([t[0].reshape(n, -1), t[1].reshape(n, -1), (t[2] - t[0]).reshape(n, -1),
                   (t[2] - t[3]).reshape(n, -1), t[4].reshape(n, 1)], dim=1)
    return t[0] + blend * net(x).view(t[0].shape)


def rollout(net: Any, batch: Batch, blend: float = 1.0) -> Any:
    """Run the model closed-loop over the clips; returns corrected points ``(B, T, K, 2)``."""
    import torch

    b, t = batch.cur.shape[:2]
    step = torch.from_numpy(batch.step)
    cur = torch.from_numpy(batch.cur)
    p1, p2 = torch.from_numpy(batch.prev1), torch.from_numpy(batch.prev2)
    has = torch.from_numpy((~batch.fresh).astype(np.float32))
    fresh = torch.from_numpy(batch.fresh)[:, None, None]
    outs = []
    for k in range(t):
        if k:
            m = step[:, k]

            def to_here(x: Any, m: Any = m) -> Any:
                return x @ m[:, :, :2].transpose(1, 2) + m[:, None, :, 2]

            new_p1 = to_here(outs[-1])
            # a clip started without history has only one earlier frame at k = 1
            p2 = torch.where(fresh, new_p1, to_here(p1)) if k == 1 else to_here(p1)
            p1 = new_p1
            has = torch.ones(b)
        outs.append(forward(net, cur[:, k], batch.conf[:, k], p1, p2, has, blend))
    return torch.stack(outs, 1)


def clip_loss(out: Any, gt: np.ndarray, iod: np.ndarray) -> Any:
    """Mean point error over the inter-ocular distance."""
    import torch

    return ((out - torch.from_numpy(gt)).norm(dim=-1) / torch.from_numpy(iod)[..., None]).mean()


def fit(net: Any, clips: Clips, steps: int, batch: int, lr: float, weight_decay: float,
        rng: np.random.Generator, log: Callable[[int, float], None] | None = None) -> float:
    """Train ``net`` closed-loop on random corrupted batches; returns the last batch loss."""
    import torch

    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps,
                                                pct_start=max(0.05, 2.5 / steps))
    loss_value = float("nan")
    net.train()
    for step in range(1, steps + 1):
        bt = make_batch(clips, rng.integers(0, len(clips), batch), rng)
        loss = clip_loss(rollout(net, bt), bt.gt, bt.iod)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_value = float(loss.detach())
        if log is not None and (step % 500 == 0 or step == steps):
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


def evaluate(net: Any, clips: Clips, blend: float = 1.0) -> dict[str, float]:
    """NME (%) of the RCN and of the closed-loop model on all points, occluded points, and
    faces without occlusion (history sharing 65 % of the network's error)."""
    import torch

    bt = make_batch(clips, np.arange(len(clips)), None)
    with torch.no_grad():
        out = rollout(net.eval(), bt, blend).numpy()
    before = np.linalg.norm(bt.cur - bt.gt, axis=-1) / bt.iod[..., None]
    after = np.linalg.norm(out - bt.gt, axis=-1) / bt.iod[..., None]
    occ = clips.occluded
    clean = ~occ.any(-1)
    return {
        "nme_rcn": float(before.mean() * 100),
        "nme_temporal": float(after.mean() * 100),
        "nme_rcn_occluded_points": float(before[occ].mean() * 100),
        "nme_temporal_occluded_points": float(after[occ].mean() * 100),
        "nme_rcn_clean_faces": float(before[clean].mean() * 100),
        "nme_temporal_clean_faces": float(after[clean].mean() * 100),
    }


def cached_clips(cfg: TemporalTrainConfig, split: str, samples: list[Sample], variants: int,
                 seed: int, size: int) -> Clips:
    """Crops cached per (split, variants, frames, seed); RCN outputs per RCN weights."""
    cache = Path(cfg.cache)
    cache.mkdir(parents=True, exist_ok=True)
    names = hashlib.sha256("\n".join(s.name for s in samples).encode()).hexdigest()[:8]
    base = f"{split}{names}-v{DATA_VERSION}-{variants}x{cfg.frames}-{seed}-{len(samples)}-{size}"
    crops_path = cache / f"{base}-crops.npz"
    rcn_path = cache / f"{base}-rcn-{file_sha256(cfg.rcn)[:12]}.npz"
    if crops_path.exists():
        with np.load(crops_path) as z:
            arrays = {k: z[k] for k in z.files}
    else:
        arrays = synthesise(samples, variants, cfg.frames, seed, size)
        np.savez(crops_path, **arrays)
    if rcn_path.exists():
        with np.load(rcn_path) as z:
            cur, conf = z["cur"], z["conf"]
    else:
        cur, conf = run_rcn(cfg.rcn, arrays["crops"])
        np.savez(rcn_path, cur=cur, conf=conf)
    return to_clips(arrays, cur, conf, size)


def training_samples(folders: tuple[str, ...], limit: int | None,
                     select_frac: float = 0.0) -> list[Sample]:
    """The labelled stills of ``folders`` (``limit`` each) outside the ``select_frac``
    selection slice, held-out folders refused."""
    samples: list[Sample] = []
    for folder in folders:
        check_not_held_out(folder)
        samples += [s for s in load_kept(folder, limit)[0]
                    if not (select_frac and in_selection(s.name, select_frac))]
    return samples


def train(cfg: TemporalTrainConfig) -> dict[str, object]:
    """Build (or load cached) clips, train, save weights + sidecar; returns the sidecar."""
    import torch

    from tracker.models.checkpoint import load_checkpoint

    t0 = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    limit = cfg.limit or None
    size = load_checkpoint(cfg.rcn).net.size
    stills = training_samples(cfg.train, limit, cfg.select_frac)
    clips = cached_clips(cfg, "train", stills, cfg.variants, cfg.seed, size)
    val_samples = [s for folder in cfg.val for s in load_folder(folder, limit)]
    val = cached_clips(cfg, "val", val_samples, cfg.val_variants, cfg.seed + 1, size)
    print(f"clips: train {len(clips)} val {len(val)} x {cfg.frames} frames "
          f"({time.perf_counter() - t0:.0f}s)", flush=True)
    tc = TemporalConfig(hidden=cfg.hidden, layers=cfg.layers, blend=cfg.blend)
    net = build_net(tc)
    fit(net, clips, cfg.steps, cfg.batch, cfg.lr, cfg.weight_decay,
        np.random.default_rng(cfg.seed),
        log=lambda step, loss: print(f"step {step} loss {loss * 100:.2f}% "
                                     f"({time.perf_counter() - t0:.0f}s)", flush=True))
    metrics = evaluate(net, val, cfg.blend)
    weights = export_weights(net)
    TemporalDenoiser(tc, weights)  # checks the shapes
    meta = {
        "trained_with": asdict(cfg),
        "rcn_weights": cfg.rcn,
        "rcn_sha256": file_sha256(cfg.rcn),
        "train_clips": len(clips),
        "val_clips": len(val),
        "val_closed_loop": metrics,
        "seconds": round(time.perf_counter() - t0, 1),
        "inputs": "current RCN points + confidence, the model's own final points of the two "
                  "previous frames, all in the current crop's normalised coordinates",
    }
    out_path = Path(cfg.out) / f"{cfg.name}.npz"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_temporal(out_path, tc, weights, meta)
    print(json.dumps(metrics, indent=2), flush=True)
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(description="train the temporal denoising keypoint model")
    for f, v in asdict(TemporalTrainConfig()).items():
        if isinstance(v, tuple):
            parser.add_argument(f"--{f}", nargs="+", default=v)
        else:
            parser.add_argument(f"--{f}", type=type(v), default=v)
    train(TemporalTrainConfig(**vars(parser.parse_args())))


if __name__ == "__main__":
    main()
