"""Model variants: shapes, gradients, loss, fusion, checkpoints."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from tracker.models import heatmap
from tracker.models.checkpoint import WeightsError, load_checkpoint, save_checkpoint
from tracker.models.networks import DKM, VARIANTS, DKMConfig, Fused, argmax_points, build_model, keypoint_maps
from tracker.training.train import TrainConfig, corrupt_points, heatmap_loss

SMALL = {name: replace(cfg, widths=tuple(max(4, w // 8) for w in cfg.widths), size=32)
         for name, cfg in VARIANTS.items()}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_shapes_and_gradients(name: str) -> None:
    cfg = SMALL[name]
    model = build_model(cfg)
    x = torch.randn(2, cfg.in_channels, cfg.size, cfg.size)
    y = model(x)
    assert y.shape == (2, cfg.n_points, cfg.size, cfg.size)
    y.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_full_size_variant_output_shape(name: str) -> None:
    cfg = VARIANTS[name]
    with torch.no_grad():
        y = build_model(cfg).eval()(torch.zeros(1, cfg.in_channels, cfg.size, cfg.size))
    assert y.shape == (1, 68, cfg.size, cfg.size)


def test_loss_decreases_on_tiny_batch() -> None:
    torch.manual_seed(0)
    cfg = SMALL["rcn_lite"]
    model = build_model(cfg)
    x = torch.randn(4, 1, cfg.size, cfg.size)
    pts = torch.rand(4, 68, 2) * (cfg.size - 1)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    first = None
    for _ in range(80):
        loss = heatmap_loss(model(x), pts, 1.0)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.9 * first


def test_heatmap_loss_is_minimal_at_target() -> None:
    pts = torch.tensor([[[10.0, 12.0]]])
    good = keypoint_maps(pts, 32, 1.0).log().clamp_min(-50)
    bad = keypoint_maps(pts + 5, 32, 1.0).log().clamp_min(-50)
    assert float(heatmap_loss(good, pts, 1.0)) < float(heatmap_loss(bad, pts, 1.0))


def test_points_outside_map_carry_no_loss() -> None:
    logits = torch.randn(1, 2, 16, 16)
    inside = torch.tensor([[[5.0, 5.0], [3.0, 4.0]]])
    outside = inside.clone()
    outside[0, 1] = torch.tensor([40.0, 4.0])
    only_first = heatmap_loss(logits[:, :1], inside[:, :1], 1.0)
    assert torch.isclose(heatmap_loss(logits, outside, 1.0), only_first)


# decode (windowed soft-argmax) at the training sigma on peaks >= DECODE_RADIUS px inside the
# map (a clipped window pulls border points inwards); the parabola fit is exact for any sigma and
# falls back to the integer pixel on the border.
@pytest.mark.parametrize(("decode", "sigma", "x", "y"), [
    (heatmap.decode, TrainConfig.sigma, 3.0, 7.0),
    (heatmap.decode, TrainConfig.sigma, 10.3, 4.6),
    (heatmap.decode_parabola, 1.5, 3.0, 7.0),
    (heatmap.decode_parabola, 1.5, 10.3, 4.6),
    (heatmap.decode_parabola, 1.5, 0.0, 15.0),
])
def test_heatmap_decode_recovers_peak_of_trained_target(decode, sigma: float, x: float,
                                                        y: float) -> None:
    pts = torch.tensor([[[x, y]]])
    logits = keypoint_maps(pts, 16, sigma).log().clamp_min(-80)
    got = torch.from_numpy(decode(logits.numpy())[0])[0, 0]
    assert torch.allclose(got, pts[0, 0], atol=0.05)
    assert torch.equal(argmax_points(logits)[0, 0], pts[0, 0].round())


def test_corrupt_points_moves_or_hides_a_subset() -> None:
    gen = torch.Generator().manual_seed(0)
    pts = torch.rand(64, 68, 2) * 63
    noisy, visible = corrupt_points(pts, 64, gen, max_frac=0.5)
    moved = (noisy != pts).any(-1)
    assert moved.any() and (~visible).any()
    assert not (moved & ~visible).any()
    assert float((moved | ~visible).float().mean()) < 0.5


def test_fused_model_sums_dkm_prior() -> None:
    cfg = SMALL["rcn_lite"]
    dkm = DKM(DKMConfig(map_size=8, width=8, dilations=(1, 2)))
    fused = Fused(build_model(cfg), dkm).eval()
    x = torch.randn(2, 1, cfg.size, cfg.size)
    with torch.no_grad():
        assert fused(x).shape == (2, 68, cfg.size, cfg.size)
        assert not torch.allclose(fused(x), fused.rcn(x))


def test_checkpoint_round_trip(tmp_path) -> None:
    cfg = SMALL["rcn_lite"]
    model = build_model(cfg).eval()
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, cfg, None, {"note": "x"})
    ck = load_checkpoint(path)
    x = torch.randn(1, 1, cfg.size, cfg.size)
    with torch.no_grad():
        np.testing.assert_allclose(ck.model(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)
    assert ck.meta == {"note": "x"} and ck.net == cfg


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04garbage"])
def test_corrupt_weights_raise_clear_error(tmp_path, content: bytes) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match="bad.pt"):
        load_checkpoint(path)


def test_missing_weights_raise_clear_error(tmp_path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize("name", ["rcn_lite", "sumnet_lite"])
def test_mirror_symmetric_weights_give_mirror_equivariant_points(name: str) -> None:
    """Architecture + decoder have no built-in left/right bias (see benchmarks/flip_gap.py)."""
    from tracker.face68 import FLIP_PERM

    torch.manual_seed(0)
    model = build_model(VARIANTS[name]).eval()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.Conv2d):
                mod.weight.copy_((mod.weight + mod.weight.flip(-1)) / 2)
                if mod.out_channels == 68:  # output maps: mirror pairs share weights
                    mod.weight.copy_((mod.weight + mod.weight[FLIP_PERM]) / 2)
                    mod.bias.copy_((mod.bias + mod.bias[FLIP_PERM]) / 2)
        x = torch.randn(3, 1, 64, 64)
        p = heatmap.decode(model(x).numpy())[0]
        q = heatmap.decode(np.ascontiguousarray(model(x.flip(-1)).numpy()))[0][:, FLIP_PERM]
    q[..., 0] = 63 - q[..., 0]
    np.testing.assert_allclose(q, p, atol=1e-3)
