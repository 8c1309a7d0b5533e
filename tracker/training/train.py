"""Training loops for RCN/SumNet (images) and the denoising keypoint model (keypoint maps).

Trains on one or more labelled folders; checkpoints are selected on a split carved out of that
data by a stable hash of the person/photo (``tracker.training.splits``), or on a ``val`` folder
when one is given. Checkpoints every epoch to ``OUT/last.pt`` (resumable) and ``OUT/best.pt``
(best selection NME); the log goes to ``OUT/log.txt``, one line per epoch, with the selection
NME per data folder. Runs on a CUDA GPU when one is present
(``device``); ``minutes`` fits the one-cycle schedule to a wall-clock budget.
"""

from __future__ import annotations

import json
import math
import queue
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tracker.evaluation.metrics import nme
from tracker.models import heatmap
from tracker.models.checkpoint import count_params, load_checkpoint, save_checkpoint
from tracker.models.networks import DKM, VARIANTS, DKMConfig, Fused, build_model, keypoint_maps, to_map_coords
from tracker.models.preprocess import Preprocess
from tracker.training.data import Augment, batches
from tracker.training.splits import SELECT_FRAC, folder_weight, load_train_data


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (saved beside its checkpoints)."""

    model: str = "rcn_lite"
    # training folders (a single path is taken as a one-folder tuple)
    train: tuple[str, ...] = ("../shared/data/faces68/train",)
    # selection folder; "" = carve ``select_frac`` of the training groups out for selection
    val: str = ""
    select_frac: float = SELECT_FRAC
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
    # training folders (as given to ``train``, without ``@W``) whose images are flipped even
    # with ``--no-flip`` (labels that are mirror-symmetric, as 300-W's, beside faces68's)
    flip_folders: tuple[str, ...] = ()
    # a training folder whose selection NME alone picks ``best.pt`` ("" = all selection images)
    select_on: str = ""
    teacher: str = ""  # checkpoint whose softmax maps are a second target (distillation)
    kd_weight: float = 0.5  # with ``teacher``: weight of its maps in the loss (1 - it: the labels)
    device: str = "auto"  # "auto" (CUDA when available), "cpu" or "cuda"
    # > 0: wall-clock budget; after each epoch the schedule shrinks to the epochs that still fit
    # (``epochs`` is then an upper bound)
    minutes: float = 0.0

    def __post_init__(self) -> None:
        folders = (self.train,) if isinstance(self.train, str | Path) else self.train
        object.__setattr__(self, "train", tuple(str(f) for f in folders))
        object.__setattr__(self, "flip_folders", tuple(str(f) for f in self.flip_folders))
        names = {str(folder_weight(f)[0]) for f in self.train}
        for f in (*self.flip_folders, *([self.select_on] if self.select_on else [])):
            if f not in names:
                raise ValueError(f"{f} is not one of the training folders ({', '.join(sorted(names))})")


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


def distill_loss(logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each map's softmax against the teacher's softmax of the same map."""
    n, k = logits.shape[:2]
    target = F.softmax(teacher.reshape(n, k, -1).float(), dim=-1)
    return -(target * F.log_softmax(logits.reshape(n, k, -1), dim=-1)).sum(-1).mean()


def ema_avg_fn(decay: float):  # noqa: ANN201 - torch's multi_avg_fn signature
    """EMA update (AveragedModel's ``multi_avg_fn``: one call per device/dtype group) with
    warm-up: step n uses min(decay, (1 + n) / (10 + n)), so the average forgets the initial
    weights within the first hundred steps (a plain EMA at 0.998 still carried 12 % of a random
    init after 10 epochs of 107 steps). One host sync a step, not one per tensor."""

    def avg(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        if averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, 1.0 - d)
        else:  # integer buffers (BatchNorm's batch counter)
            for a, c in zip(averaged, current, strict=True):
                a.copy_(a * d + c * (1.0 - d))

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
        self.device = torch.device(resolve_device(cfg.device))
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
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
        self.model.to(self.device)
        self.teacher = self.load_teacher(cfg.teacher) if cfg.teacher else None
        self.data = load_train_data(cfg.train, cfg.select_frac, cfg.val or None, cfg.limit or None)
        self.train_set, self.val_set = self.data.train, self.data.select
        self.val_groups = np.array(self.data.select_groups, dtype=object)
        self.best_by_folder: dict[str, float] = {}
        # fixed, un-augmented validation crops, built once
        self.val = list(batches(self.val_set, self.net.size, 64, self.rng, None, shuffle=False))
        self.steps_per_epoch = math.ceil(self.data.epoch_size() / cfg.batch)
        self.epochs = cfg.epochs  # the schedule's length (shrinks to fit ``minutes``)
        self.epoch = 0
        self.best = float("inf")
        self.opt = torch.optim.AdamW(self.trainable.parameters(), lr=cfg.lr,
                                     weight_decay=cfg.weight_decay)
        self.sched = self.one_cycle(self.epochs)
        self.ema = None
        if cfg.ema > 0:
            self.ema = torch.optim.swa_utils.AveragedModel(
                self.model, multi_avg_fn=ema_avg_fn(cfg.ema), use_buffers=True)
        if cfg.resume and (self.out / "last.pt").exists():
            state = torch.load(self.out / "last.pt", map_location="cpu", weights_only=False)
            self.model.load_state_dict(state["model"])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
            self.opt.load_state_dict(state["opt"])
            self.epoch, self.best = state["epoch"], state["best"]
            self.best_by_folder = state.get("best_by_folder", {})
            self.epochs = state.get("epochs", self.epochs)  # as fitted to a time budget
            self.sched = self.one_cycle(self.epochs)
            self.sched.load_state_dict(state["sched"])
            self.rng = state["rng"]
            self.gen.set_state(state["gen"])

    def one_cycle(self, epochs: int) -> torch.optim.lr_scheduler.OneCycleLR:
        """The one-cycle schedule over ``epochs``, advanced to the steps already taken."""
        total = max(epochs * self.steps_per_epoch, 1)
        # warm-up over 5 % of the steps, at least 2 (torch divides by zero at exactly 1)
        pct = 2.0 / total if 3 <= total < 40 else 0.05
        sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, self.cfg.lr, total_steps=total,
                                                    pct_start=pct)
        with warnings.catch_warnings():  # stepping without optimiser steps is the point here
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(self.epoch * self.steps_per_epoch):
                sched.step()
        return sched

    def fit_budget(self, elapsed: float, epoch_times: list[float]) -> None:
        """Fit the schedule (at most ``cfg.epochs``) to what is left of ``cfg.minutes`` at the
        median epoch time since the first epoch (which carries start-up costs)."""
        if self.cfg.minutes <= 0 or not epoch_times:
            return
        pace = float(np.median(epoch_times[1:] or epoch_times))
        fit = self.epoch + int(max(0.0, self.cfg.minutes * 60.0 - elapsed) / pace)
        epochs = min(self.cfg.epochs, max(fit, self.epoch))
        if epochs != self.epochs:
            self.epochs = epochs
            self.sched = self.one_cycle(epochs)

    def load_teacher(self, path: str) -> torch.nn.Module:
        """The distillation teacher: same input size and preprocessing as the student."""
        ckpt = load_checkpoint(path)
        if ckpt.net.size != self.net.size or ckpt.preprocess != self.pre:
            raise ValueError(f"teacher {path}: input {ckpt.net.size} px, {ckpt.preprocess}; "
                             f"the student needs {self.net.size} px, {self.pre}")
        for p in ckpt.model.parameters():
            p.requires_grad_(False)
        return ckpt.model.eval().to(self.device, memory_format=torch.channels_last)

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
        flips = None
        if cfg.flip_folders and not aug.flip:
            flips = np.isin(np.array(self.data.train_groups, dtype=object), cfg.flip_folders)
        stream = batches(self.train_set, self.net.size, cfg.batch, self.rng, aug,
                         order=self.data.epoch_order(self.rng), flip=flips)
        if self.device.type == "cuda":
            stream = prefetch(stream)
        for crops, pts in stream:
            pts_t = torch.from_numpy(pts).to(self.device)
            if cfg.dkm:
                loss = self.dkm_loss(pts_t)
            else:
                x = torch.from_numpy(self.pre(crops)).to(self.device)
                logits = self.model(x)
                loss = heatmap_loss(logits, pts_t, cfg.sigma)
                if self.teacher is not None:
                    with torch.no_grad(), torch.autocast(self.device.type, torch.bfloat16):
                        soft = self.teacher(x)  # bf16: 2.6x faster on this CPU, logits +-0.1
                    loss = (1.0 - cfg.kd_weight) * loss + cfg.kd_weight * distill_loss(logits, soft)
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
        noisy, visible = corrupt_points(pts.cpu().clamp(0, size - 1), size, self.gen)
        noisy, visible = noisy.to(pts.device), visible.to(pts.device)
        maps = keypoint_maps(to_map_coords(noisy, size, m), m, dkm.cfg.sigma, visible)
        prior = F.interpolate(dkm(maps), size=(size, size), mode="bilinear", align_corners=False)
        return heatmap_loss(prior, pts, self.cfg.sigma)

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights that are validated and saved as ``best.pt`` (the EMA when enabled)."""
        return self.ema.module if self.ema is not None else self.model

    @torch.no_grad()
    def validate(self) -> tuple[float, float, dict[str, float]]:
        """Selection loss, mean NME and mean NME per data folder (of the eval weights)."""
        model = self.eval_model
        model.eval()
        losses, errs = [], []
        for crops, pts in self.val:
            logits = model(torch.from_numpy(self.pre(crops)).to(self.device))
            pts_t = torch.from_numpy(pts).to(self.device)
            losses.append(float(heatmap_loss(logits, pts_t, self.cfg.sigma)) * len(crops))
            errs.append(nme(heatmap.decode(np.ascontiguousarray(logits.cpu().numpy()))[0], pts))
        e = np.concatenate(errs)
        by_folder = {f: float(e[self.val_groups == f].mean()) for f in dict.fromkeys(self.val_groups)}
        return sum(losses) / len(self.val_set), float(e.mean()), by_folder

    def save(self, name: str, val_nme: float) -> None:
        meta = {"train_config": asdict(self.cfg), "epoch": self.epoch, "val_nme": val_nme,
                "preprocess": asdict(self.pre), "params": count_params(self.model),
                "epochs_scheduled": self.epochs, "val_nme_by_folder": self.best_by_folder,
                "data_counts": self.data.counts()}
        save_checkpoint(self.out / name, self.eval_model, self.net, self.dkm_cfg, meta)

    def run(self) -> float:
        cfg = self.cfg
        self.log(f"# {json.dumps(asdict(cfg))} params={count_params(self.model)} "
                 f"train={len(self.train_set)} val={len(self.val_set)}")
        for folder, (n_train, n_sel) in self.data.counts().items():
            held = self.data.dropped.get(folder, 0)
            weight = (self.data.weights or {}).get(folder, 1.0)
            self.log(f"# data {folder}: {n_train} training, {n_sel} selection images"
                     + (f", sampling weight {weight:g}" if weight != 1.0 else "")
                     + (f" ({held} InfAnFace test_ images held out)" if held else ""))
        started, epoch_times = time.perf_counter(), []
        while self.epoch < self.epochs:
            t0 = time.perf_counter()
            train_loss = self.train_epoch()
            val_loss, val_nme, by_folder = self.validate()
            self.epoch += 1
            score = by_folder[cfg.select_on] if cfg.select_on else val_nme
            if score < self.best:
                self.best, self.best_by_folder = score, by_folder
                self.save("best.pt", val_nme)
            epoch_times.append(time.perf_counter() - t0)
            self.fit_budget(time.perf_counter() - started, epoch_times)
            ema = self.ema.state_dict() if self.ema is not None else None
            torch.save({"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                        "sched": self.sched.state_dict(), "epoch": self.epoch, "best": self.best,
                        "epochs": self.epochs, "best_by_folder": self.best_by_folder,
                        "rng": self.rng, "gen": self.gen.get_state(), "ema": ema},
                       self.out / "last.tmp")
            (self.out / "last.tmp").replace(self.out / "last.pt")
            folders = "" if len(by_folder) < 2 else " [" + ", ".join(
                f"{f} {v * 100:.2f}%" for f, v in by_folder.items()) + "]"
            self.log(f"epoch {self.epoch:3d}/{self.epochs} train_loss {train_loss:.4f} "
                     f"val_loss {val_loss:.4f} val_nme {val_nme * 100:.2f}%{folders} "
                     f"best {self.best * 100:.2f}% "
                     f"lr {self.sched.get_last_lr()[0]:.2e} {time.perf_counter() - t0:.0f}s")
        for folder, value in self.best_by_folder.items():
            self.log(f"# best.pt selection NME {folder}: {value * 100:.2f}% "
                     f"(n={self.data.counts()[folder][1]})")
        return self.best


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a CUDA GPU is present, else ``cpu``; ValueError for anything
    but auto, cpu and cuda, and for cuda without a GPU."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is available")
    return device


def prefetch(items: Iterator[tuple[np.ndarray, np.ndarray]],
             depth: int = 4) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Produce ``items`` on a background thread (augmentation overlaps GPU steps); same order,
    and an error there is raised here."""
    q: queue.Queue = queue.Queue(depth)
    done = object()
    failed: list[BaseException] = []

    def work() -> None:
        try:
            for item in items:
                q.put(item)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            failed.append(e)
        finally:
            q.put(done)

    threading.Thread(target=work, daemon=True).start()
    while (item := q.get()) is not done:
        yield item
    if failed:
        raise failed[0]


def train(cfg: TrainConfig) -> float:
    """Train and return the best validation NME."""
    return Trainer(cfg).run()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="train RCN/SumNet/DKM")
    for f, v in asdict(TrainConfig()).items():
        if isinstance(v, bool):
            parser.add_argument(f"--{f}", action=argparse.BooleanOptionalAction, default=v)
        elif isinstance(v, tuple):
            parser.add_argument(f"--{f}", nargs="+", default=v)
        else:
            parser.add_argument(f"--{f}", type=type(v), default=v)
    train(TrainConfig(**vars(parser.parse_args())))
