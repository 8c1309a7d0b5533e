"""Training data from several labelled folders, and the selection split carved out of it.

The selection split (checkpoint selection instead of a validation folder) is chosen by a hash of
each file's *group*: its name without a trailing ``_<digits>[b]`` (faces68's person prefix
``Name_Surname``, or 300-W's photo ``afw_1051618982`` / ``helen_train_100032540``), so a person's
or photo's images always land on the same side, in every run and on every machine. Held-out
data never enters: a folder named ``val``/``valid``/``validation``/``test`` is refused, and the
files of InfAnFace's ``test_`` split (``wild68/infant``) are dropped from training folders.

A training folder may carry a sampling weight, ``DIR@W``: each epoch draws ``W`` times its
training images (``@3``: every image three times; ``@0.5``: a random half), so a small domain
can count as much as a large one; the selection split is never reweighted.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tracker.evaluation.stills import SPLIT_PREFIXES
from tracker.face68 import N_POINTS
from tracker.io.pts import Sample, find_samples, read_image, read_pts

HELD_OUT_FOLDERS = frozenset({"val", "valid", "validation", "test"})
"""Folder names that hold evaluation data: never trained or selected on."""
HELD_OUT_PREFIX = SPLIT_PREFIXES[1]
"""File-name prefix of InfAnFace's test split (``test_``): dropped from training folders."""

SELECT_FRAC = 0.1
"""Default share of the training groups carved out for selection: the RCN selects checkpoints
on it, the temporal model leaves it out, and benchmarks/video_clips.py's train-select clips
come from it."""

_MEMBER = re.compile(r"_\d+b?$")


def group_key(name: str) -> str:
    """The person/photo a file belongs to: its stem without a trailing ``_<digits>[b]``."""
    stem = Path(name).stem
    return _MEMBER.sub("", stem) or stem


def hash_fraction(key: str) -> float:
    """A stable pseudo-random number in [0, 1) for ``key`` (SHA-256, not Python's ``hash``)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2.0 ** 64


def in_selection(name: str, frac: float) -> bool:
    """Whether ``name``'s group falls in a selection split of (about) ``frac`` of the groups."""
    return hash_fraction(group_key(name)) < frac


def check_not_held_out(folder: str | Path, role: str = "training") -> None:
    """ValueError (one line) when ``folder`` is named like a validation or test folder."""
    name = Path(folder).resolve().name.lower()
    if name in HELD_OUT_FOLDERS:
        raise ValueError(f"{folder}: a folder named '{name}' is held out for evaluation and cannot "
                         f"be used for {role}; carve a selection split from the training data "
                         "with --select-frac instead")


def folder_weight(spec: str | Path) -> tuple[str, float]:
    """``"DIR@W"`` -> ``("DIR", W)``; a plain folder has weight 1. ValueError for a bad weight."""
    text = str(spec)
    folder, sep, weight = text.rpartition("@")
    if not sep or not folder:
        return text, 1.0
    try:
        w = float(weight)
    except ValueError:
        raise ValueError(f"{text}: the sampling weight after '@' must be a number") from None
    if not (w > 0 and math.isfinite(w)):
        raise ValueError(f"{text}: the sampling weight after '@' must be positive")
    return folder, w


def load_kept(folder: str | Path, limit: int | None = None) -> tuple[list[Sample], int]:
    """The 68-point samples of ``folder`` minus InfAnFace ``test_`` files (then the first
    ``limit``), and how many ``test_`` files were left out."""
    pairs = find_samples(folder)
    kept = [(img, pts) for img, pts in pairs if not img.stem.startswith(HELD_OUT_PREFIX)]
    samples = []
    for img, pts in kept[:limit]:
        points = read_pts(pts)
        if points.shape == (N_POINTS, 2):
            samples.append(Sample(img.stem, read_image(img), points))
    return samples, len(pairs) - len(kept)


@dataclass(frozen=True)
class TrainData:
    """Training and selection samples with each one's folder (as given)."""

    train: list[Sample]
    train_groups: tuple[str, ...]
    select: list[Sample]
    select_groups: tuple[str, ...]
    dropped: dict[str, int]  # folder -> InfAnFace test_ files left out
    weights: dict[str, float] | None = None  # folder -> sampling weight (``DIR@W``; default 1)

    def draws(self) -> dict[str, tuple[int, int]]:
        """Folder -> (times all its training images are drawn per epoch, extra random ones)."""
        weights = self.weights or {}
        n = self.counts()
        out = {}
        for folder in dict.fromkeys(self.train_groups):
            w = weights.get(folder, 1.0)
            out[folder] = (int(w), round((w - int(w)) * n[folder][0]))
        return out

    def epoch_size(self) -> int:
        """Images drawn per epoch (:meth:`epoch_order`'s length)."""
        n = self.counts()
        return sum(whole * n[f][0] + extra for f, (whole, extra) in self.draws().items())

    def epoch_order(self, rng: np.random.Generator) -> np.ndarray:
        """Indices into ``train`` for one epoch, shuffled: each folder's images ``W`` times
        (the fraction of a non-integer ``W`` as a random subset)."""
        groups = np.array(self.train_groups, dtype=object)
        parts = []
        for folder, (whole, extra) in self.draws().items():
            idx = np.flatnonzero(groups == folder)
            parts += [idx] * whole
            if extra > 0:
                parts.append(rng.choice(idx, size=extra, replace=False))
        order = np.concatenate(parts) if parts else np.arange(0)
        return order[rng.permutation(len(order))]

    def counts(self) -> dict[str, tuple[int, int]]:
        """Folder -> (training images, selection images)."""
        folders = dict.fromkeys((*self.train_groups, *self.select_groups))
        return {f: (self.train_groups.count(f), self.select_groups.count(f)) for f in folders}


def load_train_data(folders: Sequence[str | Path], select_frac: float = 0.0,
                    val: str | Path | None = None, limit: int | None = None) -> TrainData:
    """Load ``folders`` (``limit`` images each) for training; the selection set is the folder
    ``val`` when given (``select_frac`` is then ignored), else the groups that
    :func:`in_selection` puts in a ``select_frac`` split, taken out of the training images.

    Raises ValueError for a held-out folder, a fraction outside (0, 1) without ``val``, or an
    empty training or selection set.
    """
    if not folders:
        raise ValueError("no training folders given")
    weights = dict(folder_weight(f) for f in folders)
    folders = list(weights)
    for folder in folders:
        check_not_held_out(folder, "training")
    if val:
        check_not_held_out(val, "checkpoint selection")
    elif not 0.0 < select_frac < 1.0:
        raise ValueError(f"--select-frac must be between 0 and 1 (exclusive), got {select_frac}")
    train: list[Sample] = []
    train_groups: list[str] = []
    select: list[Sample] = []
    select_groups: list[str] = []
    dropped: dict[str, int] = {}
    for folder in folders:
        kept, held = load_kept(folder, limit)
        if held:
            dropped[str(folder)] = held
        if not kept:
            raise ValueError(f"no labelled 68-point training images in {folder}")
        for s in kept:
            picked = not val and in_selection(s.name, select_frac)
            (select if picked else train).append(s)
            (select_groups if picked else train_groups).append(str(folder))
    if val:
        select = load_kept(val, limit)[0]
        select_groups = [str(val)] * len(select)
    if not train:
        raise ValueError("every training image fell in the selection split: lower --select-frac")
    if not select:
        raise ValueError("the selection set is empty: raise --select-frac, add data or give --val")
    return TrainData(train, tuple(train_groups), select, tuple(select_groups), dropped,
                     {str(f): w for f, w in weights.items()})
