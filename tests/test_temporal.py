"""Temporal denoising keypoint model: shapes, NumPy/torch parity, gradients, overfit, I/O."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tracker.geometry import crop_affine, transform_points
from tracker.io.pts import Sample
from tracker.temporal.denoiser import (
    TEMPORAL_WEIGHTS,
    TemporalConfig,
    TemporalDenoiser,
    features,
    load_temporal,
    save_temporal,
)
from tracker.training.temporal_data import Clips, make_clip, normalise_affine
from tracker.training.temporal_train import (
    build_net,
    clip_loss,
    export_weights,
    fit,
    forward,
    make_batch,
    rollout,
)

GRID = np.stack(np.meshgrid(np.linspace(-0.3, 0.3, 17), np.linspace(-0.3, 0.3, 4)), -1)
GRID = GRID.reshape(-1, 2)[:68].astype(np.float32)
IDENTITY = np.array([[1, 0, 0], [0, 1, 0]], np.float32)


def batch(n: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    cur = (GRID[None] + rng.normal(0, 0.02, (n, 68, 2))).astype(np.float32)
    conf = rng.uniform(0, 1, (n, 68)).astype(np.float32)
    prev1 = (cur + rng.normal(0, 0.01, cur.shape)).astype(np.float32)
    prev2 = (prev1 + rng.normal(0, 0.01, cur.shape)).astype(np.float32)
    return cur, conf, prev1, prev2, np.ones(n, np.float32)


def tiny_clips(n: int = 16, frames: int = 2, seed: int = 0,
               step: np.ndarray = IDENTITY) -> Clips:
    """Still grid faces; some RCN points thrown far away (with low confidence)."""
    rng = np.random.default_rng(seed)
    gt = (GRID[None, None] + rng.normal(0, 0.01, (n, 1, 68, 2))).repeat(frames, 1)
    cur = gt + rng.normal(0, 0.01, gt.shape)
    bad = rng.random((n, frames, 68)) < 0.15
    cur[bad] = rng.uniform(-0.5, 0.5, (int(bad.sum()), 2))
    conf = np.where(bad, 0.05, 0.8)
    prev = gt[:, 0] + rng.normal(0, 0.005, gt[:, 0].shape)
    iod = np.linalg.norm(gt[..., 36, :] - gt[..., 45, :], axis=-1)
    steps = np.broadcast_to(step, (n, frames, 2, 3)).copy()
    f32 = np.float32
    return Clips(cur.astype(f32), conf.astype(f32), gt.astype(f32), prev.astype(f32),
                 prev.astype(f32), steps.astype(f32), bad, iod.astype(f32))


@pytest.mark.parametrize("n, hidden, layers", [(1, 256, 2), (5, 32, 1), (3, 16, 3)])
def test_shapes_and_numpy_matches_torch(n: int, hidden: int, layers: int) -> None:
    tc = TemporalConfig(hidden=hidden, layers=layers)
    torch.manual_seed(0)
    net = build_net(tc)
    for p in net.parameters():  # non-trivial weights (the head starts at zero)
        torch.nn.init.normal_(p, std=0.05)
    args = batch(n)
    assert features(*args).shape == (n, tc.n_inputs)
    with torch.no_grad():
        want = forward(net, *args).numpy()
    got = TemporalDenoiser(tc, export_weights(net))(*args)
    assert got.shape == (n, 68, 2) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_fresh_model_is_the_identity_and_gradients_reach_every_layer() -> None:
    tc = TemporalConfig(hidden=32, layers=2)
    net = build_net(tc)
    args = batch(4)
    out = forward(net, *args)
    np.testing.assert_array_equal(out.detach().numpy(), args[0])
    loss = clip_loss(out, GRID[None].repeat(4, 0), np.full(4, 0.4, np.float32))
    loss.backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None for g in grads)
    assert float(grads[-1].abs().sum()) > 0 and float(grads[-2].abs().sum()) > 0  # the head


@pytest.fixture()
def one_thread() -> object:
    """Small MLPs train much faster on one thread on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_thread")
def test_tiny_overfit_pulls_thrown_points_back() -> None:
    torch.manual_seed(0)
    clips = tiny_clips()
    net = build_net(TemporalConfig(hidden=128, layers=2))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    bt = make_batch(clips, np.arange(len(clips)), None)
    for _ in range(150):
        loss = clip_loss(rollout(net, bt), bt.gt, bt.iod)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = rollout(net, bt).numpy()
    before = np.linalg.norm(clips.cur - clips.gt, axis=-1)[clips.occluded].mean()
    after = np.linalg.norm(out - clips.gt, axis=-1)[clips.occluded].mean()
    assert after < 0.2 * before


@pytest.mark.usefixtures("one_thread")
def test_fit_trains_closed_loop_on_corrupted_batches() -> None:
    torch.manual_seed(0)
    net = build_net(TemporalConfig(hidden=16, layers=1))
    seen: list[tuple[int, float]] = []
    last = fit(net, tiny_clips(8, frames=3), steps=20, batch=4, lr=1e-2, weight_decay=0.0,
               rng=np.random.default_rng(0), log=lambda step, loss: seen.append((step, loss)))
    assert np.isfinite(last) and seen == [(20, last)]
    assert float(net[-1].weight.detach().abs().sum()) > 0  # the zero-initialised head moved


def test_make_batch_shapes_history_errors_and_fresh_starts() -> None:
    clips = tiny_clips(32, frames=3)
    det = make_batch(clips, np.arange(32), None, share=0.5)
    assert det.cur.shape == (32, 3, 68, 2) and det.step.shape == (32, 3, 2, 3)
    assert not det.fresh.any()
    want = clips.prev1 + 0.5 * (clips.cur[:, 0] - clips.gt[:, 0])
    np.testing.assert_allclose(det.prev1, want, atol=1e-6)
    rnd = make_batch(clips, np.arange(32).repeat(8), np.random.default_rng(1))
    assert 0 < rnd.fresh.sum() < 256
    np.testing.assert_array_equal(rnd.prev1[rnd.fresh], rnd.cur[rnd.fresh, 0])


def _copy_prev1_net(tc: TemporalConfig) -> torch.nn.Sequential:
    """A torch model whose output is its ``prev1`` input (one hidden layer, two ReLU halves)."""
    net = build_net(tc)
    off = 136 + 68  # start of the (prev1 - cur) block
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net[0].weight[:136, off : off + 136] = torch.eye(136)
        net[0].weight[136:, off : off + 136] = -torch.eye(136)
        net[2].weight[:, :136] = torch.eye(136)
        net[2].weight[:, 136:] = -torch.eye(136)
    return net


def test_rollout_maps_the_models_own_output_into_the_next_crop() -> None:
    tc = TemporalConfig(hidden=272, layers=1)
    net = _copy_prev1_net(tc)
    shift = np.array([[1, 0, 0.1], [0, 1, -0.05]], np.float32)
    clips = tiny_clips(4, frames=3, step=shift)
    bt = make_batch(clips, np.arange(4), None, share=0.0)
    with torch.no_grad():
        out = rollout(net, bt).numpy()
    np.testing.assert_allclose(out[:, 0], bt.prev1, atol=1e-5)
    np.testing.assert_allclose(out[:, 2], bt.prev1 + 2 * shift[:, 2], atol=1e-5)


@pytest.mark.parametrize("angle_deg", [0.0, 35.0])
def test_refine_with_an_identity_model_returns_the_points(angle_deg: float) -> None:
    tc = TemporalConfig(hidden=8, layers=1)
    zero = [np.zeros((tc.n_inputs, 8)), np.zeros(8), np.zeros((8, 136)), np.zeros(136)]
    den = TemporalDenoiser(tc, zero)
    pts = (GRID * 100 + [200, 150]).astype(np.float32)
    out = den.refine(pts, np.ones(68, np.float32), [pts + 1.0], (200.0, 150.0), 120.0,
                     math.radians(angle_deg))
    np.testing.assert_allclose(out, pts, atol=1e-3)


def test_refine_feeds_history_in_crop_coordinates() -> None:
    """A model whose output is prev1 (weights pick the ``prev1 - cur`` inputs)."""
    tc = TemporalConfig(hidden=136 * 2, layers=1)
    w0 = np.zeros((tc.n_inputs, tc.hidden), np.float32)
    off = 136 + 68  # start of the (prev1 - cur) block
    w0[off : off + 136, :136] = np.eye(136)
    w0[off : off + 136, 136:] = -np.eye(136)  # ReLU keeps both signs via two halves
    w1 = np.concatenate([np.eye(136), -np.eye(136)]).astype(np.float32)
    den = TemporalDenoiser(tc, [w0, np.zeros(tc.hidden), w1, np.zeros(136)])
    pts = (GRID * 80 + [100, 90]).astype(np.float32)
    prev = pts + [3.0, -2.0]
    out = den.refine(pts, np.ones(68, np.float32), [prev], (100.0, 90.0), 100.0, 0.4)
    np.testing.assert_allclose(out, prev, atol=1e-3)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    tc = TemporalConfig(hidden=16, layers=2)
    net = build_net(tc)
    weights = export_weights(net)
    path = tmp_path / "t.npz"
    save_temporal(path, tc, weights, {"note": "test"})
    den = load_temporal(path)
    assert den.config == tc and den.meta["note"] == "test" and den.meta["config"]["hidden"] == 16
    for a, b in zip(den.weights, weights, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("content", [b"", b"not an npz"])
def test_broken_weights_raise_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="cannot load temporal model"):
        load_temporal(path)


def test_missing_weights_raise_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_temporal(tmp_path / "nope.npz")


def test_wrong_layer_shapes_are_rejected() -> None:
    with pytest.raises(ValueError):
        TemporalDenoiser(TemporalConfig(hidden=8, layers=1), [np.zeros((3, 8))] * 4)


@pytest.mark.skipif(not TEMPORAL_WEIGHTS.is_file(), reason="no shipped temporal weights")
def test_shipped_weights_load_with_their_sidecar() -> None:
    den = load_temporal()
    assert den.meta.get("rcn_sha256") and den.meta.get("val_closed_loop")
    out = den(*batch(2))
    assert np.isfinite(out).all()


def test_synthesised_clips_follow_the_crop_geometry() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)
    pts = (GRID * 200 + 100).astype(np.float32)
    for _ in range(5):
        crops, p = make_clip(Sample("x", image, pts), rng, 64, 3, [image])
        assert crops.shape == (3, 64, 64, 3) and crops.dtype == np.uint8
        assert (p["gt"] > -8).all() and (p["gt"] < 72).all()  # the face is in every crop
        np.testing.assert_allclose(p["step"][0], IDENTITY, atol=1e-9)
        for m in p["step"][1:]:  # crops are rotated squares: steps are similarities
            lin = m[:, :2]
            np.testing.assert_allclose(lin.T @ lin, np.eye(2) * np.linalg.det(lin), atol=1e-6)
        assert p["occluded"].shape == (3, 68) and p["prev1"].shape == (68, 2)


@pytest.mark.parametrize("size", [64, 80])
def test_normalised_affine_matches_pixel_affine(size: int) -> None:
    m = np.array([[0.9, -0.2, 5.0], [0.2, 0.9, -3.0]])
    pts = np.array([[10.0, 20.0], [40.0, 33.0]])
    half = (size - 1) / 2
    want = ((pts @ m[:, :2].T + m[:, 2]) - half) / size
    n = normalise_affine(m, size)
    got = ((pts - half) / size) @ n[:, :2].T + n[:, 2]
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_crop_affine_unit_size_is_the_normalised_frame() -> None:
    m = crop_affine((50.0, 40.0), 20.0, 0.0, 1)
    np.testing.assert_allclose(transform_points(m, np.array([[50.0, 40.0], [60.0, 40.0]])),
                               [[0.0, 0.0], [0.5, 0.0]], atol=1e-6)


@pytest.mark.parametrize("blend", [1.0, 0.5, 0.0])
def test_blend_scales_the_correction(blend: float) -> None:
    tc = TemporalConfig(hidden=4, layers=1, blend=blend)
    bias = np.full(136, 0.02, np.float32)
    den = TemporalDenoiser(tc, [np.zeros((tc.n_inputs, 4)), np.zeros(4), np.zeros((4, 136)), bias])
    args = batch(2)
    np.testing.assert_allclose(den(*args), args[0] + 0.02 * blend, atol=1e-6)


@pytest.mark.parametrize(("move", "gate", "applied"),
                         [(0.02, 0.05, True), (0.08, 0.05, False), (0.08, 0.0, True)])
def test_a_correction_beyond_the_gate_keeps_the_rcn_points(move: float, gate: float,
                                                          applied: bool) -> None:
    """Every point moved ``move`` crop sides along x: applied unless the gate refuses it."""
    tc = TemporalConfig(hidden=4, layers=1, max_correction=gate)
    bias = np.tile(np.array([move, 0.0], np.float32), 68)
    den = TemporalDenoiser(tc, [np.zeros((tc.n_inputs, 4)), np.zeros(4), np.zeros((4, 136)), bias])
    pts = (GRID * 80 + [100, 90]).astype(np.float32)
    out = den.refine(pts, np.ones(68, np.float32), [pts], (100.0, 90.0), 100.0, 0.0)
    np.testing.assert_allclose(out, pts + [100.0 * move, 0.0] if applied else pts, atol=1e-3)
