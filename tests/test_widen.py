"""Widening a trained RCN keeps its output and lets every channel train."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tracker.models.checkpoint import load_checkpoint, save_checkpoint
from tracker.models.networks import VARIANTS, build_model
from tracker.training.widen import main, widen

SMALL = replace(VARIANTS["rcn_lite"], size=32, widths=(8, 12, 16, 16))


def _trained_like(seed: int = 0) -> torch.nn.Module:
    """A small RCN with random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    net = build_model(SMALL)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


def test_widened_network_computes_the_same_maps() -> None:
    net = _trained_like()
    wide = widen(net, (8, 16, 24, 40)).eval()
    assert wide.cfg.widths == (8, 16, 24, 40)
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in net.parameters())
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), wide(x), atol=1e-5)


def test_new_channels_learn() -> None:
    wide = widen(_trained_like(), (8, 16, 24, 40)).train()
    x = torch.randn(4, 1, 32, 32)
    opt = torch.optim.SGD(wide.parameters(), lr=0.1)
    w = wide.decoder[0][0][0].weight  # inputs: 16 upsampled (12 old) + 8 encoder channels
    wide(x).square().mean().backward()
    assert w.grad[:, 12:16].abs().sum() > 0  # the zeroed weights from new channels move first
    opt.step()
    opt.zero_grad()
    wide(x).square().mean().backward()
    v = wide.encoder.levels[3][0][0].weight  # its rows 16.. are new output channels
    assert v.grad[16:].abs().sum() > 0  # then the new channels themselves


def test_widths_may_not_shrink_or_change_depth() -> None:
    net = _trained_like()
    with pytest.raises(ValueError, match="not shrink"):
        widen(net, (8, 8, 16, 16))
    with pytest.raises(ValueError, match="length"):
        widen(net, (8, 12, 16))


def test_cli_writes_a_loadable_checkpoint(tmp_path) -> None:
    src = tmp_path / "small.pt"
    save_checkpoint(src, _trained_like(), SMALL, None, {"point_offset": [[0.0, 0.0]] * 68})
    out = tmp_path / "wide.pt"
    main([str(src), "--widths", "8", "16", "16", "32", "--out", str(out)])
    ck = load_checkpoint(out)
    assert ck.net.widths == (8, 16, 16, 32)
    assert ck.point_offset is None  # a calibration belongs to the old network's training
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ck.model(x), _trained_like()(x), atol=1e-5)
