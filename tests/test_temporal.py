"""Temporal denoising keypoint model: shapes, NumPy/torch parity, gradients, overfit, I/O."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tracker.data import Sample
from tracker.roi import crop_affine, transform_points
from tracker.temporal import (
    TEMPORAL_WEIGHTS,
    TemporalConfig,
    TemporalDenoiser,
    features,
    load_temporal,
    save_temporal,
)
from tracker.temporal_train import (
    Sequences,
    build_net,
    corrupt,
    export_weights,
    fit,
    forward,
    loss_fn,
    make_sequence,
)

GRID = np.stack(np.meshgrid(np.linspace(-0.3, 0.3, 17), np.linspace(-0.3, 0.3, 4)), -1)
GRID = GRID.reshape(-1, 2)[:68].astype(np.float32)


def batch(n: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    cur = (GRID[None] + rng.normal(0, 0.02, (n, 68, 2))).astype(np.float32)
    conf = rng.uniform(0, 1, (n, 68)).astype(np.float32)
    prev1 = (cur + rng.normal(0, 0.01, cur.shape)).astype(np.float32)
    prev2 = (prev1 + rng.normal(0, 0.01, cur.shape)).astype(np.float32)
    return cur, conf, prev1, prev2, np.ones(n, np.float32)


def tiny_sequences(n: int = 64, seed: int = 0) -> Sequences:
    """Faces = the grid with small noise; some points of the RCN input thrown far away."""
    rng = np.random.default_rng(seed)
    gt = (GRID[None] + rng.normal(0, 0.01, (n, 68, 2))).astype(np.float32)
    cur = gt + rng.normal(0, 0.01, gt.shape).astype(np.float32)
    bad = rng.random((n, 68)) < 0.15
    cur[bad] = rng.uniform(-0.5, 0.5, (int(bad.sum()), 2))
    conf = np.where(bad, 0.05, 0.8).astype(np.float32)
    prev1 = gt + rng.normal(0, 0.005, gt.shape).astype(np.float32)
    iod = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=1).astype(np.float32)
    return Sequences(cur.astype(np.float32), conf, prev1, prev1.copy(), gt, bad, iod)


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
    loss = loss_fn(out, GRID[None].repeat(4, 0), np.full(4, 0.4, np.float32))
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
    seq = tiny_sequences(16)
    net = build_net(TemporalConfig(hidden=128, layers=2))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    has = np.ones(len(seq.cur), np.float32)
    for _ in range(150):
        loss = loss_fn(forward(net, seq.cur, seq.conf, seq.prev1, seq.prev2, has), seq.gt, seq.iod)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = forward(net, seq.cur, seq.conf, seq.prev1, seq.prev2, has).numpy()
    before = np.linalg.norm(seq.cur - seq.gt, axis=2)[seq.occluded].mean()
    after = np.linalg.norm(out - seq.gt, axis=2)[seq.occluded].mean()
    assert after < 0.2 * before


@pytest.mark.usefixtures("one_thread")
def test_fit_trains_on_corrupted_batches() -> None:
    torch.manual_seed(0)
    net = build_net(TemporalConfig(hidden=16, layers=1))
    seen: list[tuple[int, float]] = []
    last = fit(net, tiny_sequences(16), steps=20, batch=8, lr=1e-2, weight_decay=0.0,
               rng=np.random.default_rng(0), log=lambda step, loss: seen.append((step, loss)))
    assert np.isfinite(last) and seen == [(20, last)]
    assert float(net[-1].weight.abs().sum()) > 0  # the zero-initialised head has moved


def test_corrupt_keeps_shapes_and_sometimes_drops_history() -> None:
    seq = tiny_sequences(32)
    rng = np.random.default_rng(1)
    cur, conf, p1, p2, has = corrupt(seq, np.arange(32).repeat(8), rng)
    assert cur.shape == p1.shape == p2.shape == (256, 68, 2) and conf.shape == has.shape[:1] + (68,)
    assert 0 < (has == 0).sum() < 256
    np.testing.assert_array_equal(p1[has == 0], cur[has == 0])


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
    assert den.meta.get("rcn_sha256") and den.meta.get("val")
    out = den(*batch(2))
    assert np.isfinite(out).all()


def test_synthesised_sequences_follow_the_crop_geometry() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)
    pts = (GRID * 200 + 100).astype(np.float32)
    sample = Sample("x", image, pts)
    for _ in range(10):
        crop, p = make_sequence(sample, pts, rng, 64, [image])
        assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
        # the crop was placed from the previous estimate: the face is inside and upright-ish
        assert (p["gt"] > -8).all() and (p["gt"] < 72).all()
        shift = np.abs(p["prev1"].mean(0) - p["gt"].mean(0)).max()
        assert shift < 64 * 0.5
        assert p["occluded"].shape == (68,)


def test_crop_affine_unit_size_is_the_normalised_frame() -> None:
    m = crop_affine((50.0, 40.0), 20.0, 0.0, 1)
    np.testing.assert_allclose(transform_points(m, np.array([[50.0, 40.0], [60.0, 40.0]])),
                               [[0.0, 0.0], [0.5, 0.0]], atol=1e-6)
