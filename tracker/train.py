"""Training loops for RCN/SumNet (images) and the denoising keypoint model (keypoint maps).

Checkpoints every epoch to ``OUT/last.pt`` (resumable) and ``OUT/best.pt`` (best val NME);
the log goes to ``OUT/log.txt``, one line per epoch.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tracker import heatmap
from tracker.data import Augment, Preprocess, batches, load_folder
from tracker.metrics import nme
from tracker.model import (
    DKM,
    VARIANTS,
    DKMConfig,
    Fused,
    build_model,
    count_params,
    keypoint_maps,
    load_checkpoint,
    save_checkpoint,
    to_map_coords,
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (saved beside its checkpoints)."""

    model: str = "rcn_lite"
    train: str = "../shared/data/faces68/train"
    val: str = "../shared/data/faces68/val"
    out: str = "runs/rcn_lite"
    epochs: int = 60
    batch: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    sigma: float = 1.0
    seed: int = 0
    threads: int = 2
    channels: int = 1
    lcn: bool = False
    dkm: bool = False
    dkm_width: int = 64
    rcn_weights: str = ""
    init: str = ""
    limit: int = 0
    resume: bool = False
    ema: float = 0.0  # decay of an exponential moving average of the weights (0 = off)
    rotate_sigma: float = 0.0  # rotation augmentation: 0 uniform in +-30 deg, else normal(0, sigma)
    occlude_p: float = 0.3
    flip: bool = True  # horizontal flip augmentation (with the left/right point swap)
    flip_shift: float = 0.0  # labels' x offset (fraction of the crop side) kept by flips (data.Augment)


def heatmap_loss(logits: torch.Tensor, points: torch.Tensor, sigma: float) -> torch.Tensor:
    """Softmax over each map, cross-entropy to a small normalised Gaussian at the true point.

    Points outside the map carry no loss.
    """
    n, k, h, w = logits.shape
    target = keypoint_maps(points, h, sigma).reshape(n, k, -1)
    target = target / target.sum(-1, keepdim=True).clamp_min(1e-12)
    inside = ((points >= 0) & (points <= h - 1)).all(-1).to(logits.dtype)
    ce = -(target * F.log_softmax(logits.reshape(n, k, -1), dim=-1)).sum(-1)
    return (ce * inside).sum() / inside.sum().clamp_min(1.0)


def ema_avg_fn(decay: float):  # noqa: ANN201 - torch's avg_fn signature
    """EMA update with warm-up: step n uses min(decay, (1 + n) / (10 + n)), so the average
    forgets the initial weights within the first hundred steps (a plain EMA at 0.998 still
    carried 12 % of a random init after 10 epochs of 107 steps)."""

    def avg(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        return averaged * d + current * (1.0 - d)

    return avg


def corrupt_points(points: torch.Tensor, size: int, gen: torch.Generator,
                   max_frac: float = 0.35) -> tuple[torch.Tensor, torch.Tensor]:
    """Move or hide a random subset of keypoints (the DKM's training noise)."""
    n, k, _ = points.shape
    frac = torch.rand(n, 1, generator=gen) * max_frac
    hit = torch.rand(n, k, generator=gen) < frac
    move = torch.rand(n, k, generator=gen) < 0.5
    rand_pts = torch.rand(n, k, 2, generator=gen) * (size - 1)
    noisy = torch.where((hit & move)[..., None], rand_pts, points)
    visible = ~(hit & ~move)
    return noisy, visible


class Trainer:
    """One training run: model, optimiser, data and checkpoints."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        torch.set_num_threads(cfg.threads)
        self.rng = np.random.default_rng(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        base = VARIANTS[cfg.model]
        self.net = replace(base, in_channels=cfg.channels)
        self.pre = Preprocess(self.net.size, cfg.channels, cfg.lcn)
        self.dkm_cfg = DKMConfig(width=cfg.dkm_width) if cfg.dkm else None
        if cfg.dkm:
            rcn = load_checkpoint(cfg.rcn_weights).model if cfg.rcn_weights else build_model(self.net)
            self.model = Fused(rcn, DKM(self.dkm_cfg))
            self.trainable = self.model.dkm
            if cfg.rcn_weights:
                self.net = load_checkpoint(cfg.rcn_weights).net
                self.pre = Preprocess(self.net.size, self.net.in_channels, cfg.lcn)
        else:
            self.model = build_model(self.net)
            if cfg.init:
                self.init_from(cfg.init)
            self.trainable = self.model
        limit = cfg.limit or None
        self.train_set = load_folder(cfg.train, limit)
        self.val_set = load_folder(cfg.val, limit)
        # fixed, un-augmented validation crops, built once
        self.val = list(batches(self.val_set, self.net.size, 64, self.rng, None, shuffle=False))
        steps = cfg.epochs * math.ceil(len(self.train_set) / cfg.batch)
        self.opt = torch.optim.AdamW(self.trainable.parameters(), lr=cfg.lr,
                                     weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, cfg.lr, total_steps=steps,
                                                         pct_start=0.05)
        self.ema = None
        if cfg.ema > 0:
            self.ema = torch.optim.swa_utils.AveragedModel(
                self.model, avg_fn=ema_avg_fn(cfg.ema), use_buffers=True)
        self.epoch = 0
        self.best = float("inf")
        if cfg.resume and (self.out / "last.pt").exists():
            state = torch.load(self.out / "last.pt", map_location="cpu", weights_only=False)
            self.model.load_state_dict(state["model"])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
            self.opt.load_state_dict(state["opt"])
            self.sched.load_state_dict(state["sched"])
            self.epoch, self.best = state["epoch"], state["best"]
            self.rng = state["rng"]
            self.gen.set_state(state["gen"])

    def init_from(self, path: str) -> None:
        """Copy every weight whose name and shape match ``path``'s model (warm start)."""
        src = load_checkpoint(path).model.state_dict()
        own = self.model.state_dict()
        same = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape}
        own.update(same)
        self.model.load_state_dict(own)
        print(f"# init: {len(same)}/{len(own)} tensors from {path}", flush=True)

    def log(self, line: str) -> None:
        print(line, flush=True)
        with open(self.out / "log.txt", "a") as f:
            f.write(line + "\n")

    def train_epoch(self) -> float:
        cfg = self.cfg
        self.trainable.train()
        if cfg.dkm:
            self.model.rcn.eval()
        total, count = 0.0, 0
        aug = Augment(rotate_sigma=cfg.rotate_sigma, occlude_p=cfg.occlude_p, flip=cfg.flip,
                      flip_shift=cfg.flip_shift)
        if cfg.dkm:
            aug = replace(aug, photometric=False, occlude_p=0.0)
        for crops, pts in batches(self.train_set, self.net.size, cfg.batch, self.rng, aug):
            pts_t = torch.from_numpy(pts)
            if cfg.dkm:
                loss = self.dkm_loss(pts_t)
            else:
                x = torch.from_numpy(self.pre(crops))
                loss = heatmap_loss(self.model(x), pts_t, cfg.sigma)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.sched.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            total += float(loss.detach()) * len(crops)
            count += len(crops)
        return total / max(count, 1)

    def dkm_loss(self, pts: torch.Tensor) -> torch.Tensor:
        dkm = self.model.dkm
        m, size = dkm.cfg.map_size, self.net.size
        noisy, visible = corrupt_points(pts.clamp(0, size - 1), size, self.gen)
        maps = keypoint_maps(to_map_coords(noisy, size, m), m, dkm.cfg.sigma, visible)
        prior = F.interpolate(dkm(maps), size=(size, size), mode="bilinear", align_corners=False)
        return heatmap_loss(prior, pts, self.cfg.sigma)

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights that are validated and saved as ``best.pt`` (the EMA when enabled)."""
        return self.ema.module if self.ema is not None else self.model

    @torch.no_grad()
    def validate(self) -> tuple[float, float]:
        model = self.eval_model
        model.eval()
        losses, errs = [], []
        for crops, pts in self.val:
            logits = model(torch.from_numpy(self.pre(crops)))
            pts_t = torch.from_numpy(pts)
            losses.append(float(heatmap_loss(logits, pts_t, self.cfg.sigma)) * len(crops))
            errs.append(nme(heatmap.decode(np.ascontiguousarray(logits.numpy()))[0], pts))
        return sum(losses) / len(self.val_set), float(np.concatenate(errs).mean())

    def save(self, name: str, val_nme: float) -> None:
        meta = {"train_config": asdict(self.cfg), "epoch": self.epoch, "val_nme": val_nme,
                "preprocess": asdict(self.pre), "params": count_params(self.model)}
        save_checkpoint(self.out / name, self.eval_model, self.net, self.dkm_cfg, meta)

    def run(self) -> float:
        cfg = self.cfg
        self.log(f"# {json.dumps(asdict(cfg))} params={count_params(self.model)} "
                 f"train={len(self.train_set)} val={len(self.val_set)}")
        while self.epoch < cfg.epochs:
            t0 = time.perf_counter()
            train_loss = self.train_epoch()
            val_loss, val_nme = self.validate()
            self.epoch += 1
            if val_nme < self.best:
                self.best = val_nme
                self.save("best.pt", val_nme)
            ema = self.ema.state_dict() if self.ema is not None else None
            torch.save({"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                        "sched": self.sched.state_dict(), "epoch": self.epoch, "best": self.best,
                        "rng": self.rng, "gen": self.gen.get_state(), "ema": ema},
                       self.out / "last.tmp")
            (self.out / "last.tmp").replace(self.out / "last.pt")
            self.log(f"epoch {self.epoch:3d} train_loss {train_loss:.4f} val_loss {val_loss:.4f} "
                     f"val_nme {val_nme * 100:.2f}% best {self.best * 100:.2f}% "
                     f"lr {self.sched.get_last_lr()[0]:.2e} {time.perf_counter() - t0:.0f}s")
        return self.best


def train(cfg: TrainConfig) -> float:
    """Train and return the best validation NME."""
    return Trainer(cfg).run()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="train RCN/SumNet/DKM")
    for f, v in asdict(TrainConfig()).items():
        if isinstance(v, bool):
            parser.add_argument(f"--{f}", action=argparse.BooleanOptionalAction, default=v)
        else:
            parser.add_argument(f"--{f}", type=type(v), default=v)
    train(TrainConfig(**vars(parser.parse_args())))
