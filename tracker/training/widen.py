"""Widen a trained RCN's levels without changing what it computes (a warm start for a wider net).

Every old channel keeps its index within its level; a new output channel gets the wider
layer's fresh initial weights, and every weight *from* a new channel into an old one is zero, so
the widened network computes the old one's maps exactly (in eval mode) and training grows the
new channels from there. Levels may only grow; the input, depth, kernels and points stay.

Run: python -m tracker.training.widen OLD.pt --widths 16 32 64 128 192 --out WIDE.pt
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch
from torch import nn

from tracker.models.checkpoint import count_params, load_checkpoint, save_checkpoint
from tracker.models.configs import NetConfig
from tracker.models.networks import RCN, build_model


def _copy_conv(old: nn.Conv2d, new: nn.Conv2d, inputs: list[int]) -> None:
    """``old``'s kernels into ``new``'s first rows; ``inputs[j]`` is old input j's new index.
    Weights from new inputs into old outputs are zeroed."""
    with torch.no_grad():
        o = old.out_channels
        new.weight[:o].zero_()
        new.weight[:o, inputs] = old.weight
        if old.bias is not None:
            new.bias[:o] = old.bias


def _copy_bn(old: nn.BatchNorm2d, new: nn.BatchNorm2d) -> None:
    with torch.no_grad():
        c = old.num_features
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(new, name)[:c] = getattr(old, name)
        new.num_batches_tracked.copy_(old.num_batches_tracked)


def _copy_block(old: nn.Sequential, new: nn.Sequential, inputs: list[int]) -> None:
    """A conv + BN + ReLU block (see :func:`tracker.models.networks.conv_bn_relu`)."""
    _copy_conv(old[0], new[0], inputs)
    _copy_bn(old[1], new[1])


def widen(model: RCN, widths: tuple[int, ...], seed: int = 0) -> RCN:
    """A wider copy of ``model`` (one width per level, each >= the old one) with the same output."""
    cfg: NetConfig = model.cfg
    old_w = cfg.widths
    if len(widths) != len(old_w) or any(n < o for n, o in zip(widths, old_w, strict=True)):
        raise ValueError(f"widths {tuple(widths)} must match {old_w} in length and not shrink it")
    torch.manual_seed(seed)
    wide = build_model(replace(cfg, widths=tuple(widths)))
    for lvl, (old_level, new_level) in enumerate(zip(model.encoder.levels, wide.encoder.levels,
                                                     strict=True)):
        for j, (ob, nb) in enumerate(zip(old_level, new_level, strict=True)):
            cin = cfg.in_channels if (lvl == 0 and j == 0) else old_w[lvl - 1 if j == 0 else lvl]
            _copy_block(ob, nb, list(range(cin)))
    for i, (od, nd) in enumerate(zip(model.decoder, wide.decoder, strict=True)):
        # input: [upsampled level i+1 (its width), encoder level i]
        inputs = list(range(old_w[i + 1])) + [widths[i + 1] + c for c in range(old_w[i])]
        _copy_block(od[0], nd[0], inputs)
        _copy_block(od[1], nd[1], list(range(old_w[i])))
    _copy_conv(model.head, wide.head, list(range(old_w[0])))
    return wide


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights")
    p.add_argument("--widths", type=int, nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    ck = load_checkpoint(a.weights)
    if ck.dkm is not None or not isinstance(ck.model, RCN):
        raise SystemExit("error: widen takes an RCN checkpoint without a DKM")
    wide = widen(ck.model, tuple(a.widths), a.seed)
    meta = {k: v for k, v in ck.meta.items() if k != "point_offset"}
    meta.update({"widened_from": str(a.weights), "params": count_params(wide)})
    save_checkpoint(a.out, wide.eval(), wide.cfg, None, meta)
    print(f"{a.out}: widths {wide.cfg.widths}, {count_params(wide):,} parameters")


if __name__ == "__main__":
    main()
