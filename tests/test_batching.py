"""OpenVINO batch shapes: a bounded set of compiled graphs serves any number of faces."""

from __future__ import annotations

import numpy as np
import pytest

from tracker.engines.openvino import EXACT_BATCH, MAX_BATCH, batch_bucket, warm_sizes


@pytest.mark.parametrize("n, bucket", [(1, 1), (5, 5), (8, 8), (9, 16), (16, 16), (17, 32),
                                       (33, 64), (64, 64)])
def test_batch_bucket(n: int, bucket: int) -> None:
    assert batch_bucket(n) == bucket


@pytest.mark.parametrize("max_faces", [1, 4, 60, 1000])
def test_warm_sizes_stay_bounded(max_faces: int) -> None:
    sizes = warm_sizes(max_faces)
    assert sizes == sorted(set(sizes)) and sizes[-1] <= MAX_BATCH
    assert len(sizes) <= EXACT_BATCH + 3
    assert all(batch_bucket(min(n, MAX_BATCH)) in sizes for n in range(1, max_faces + 1))


def test_padded_and_chunked_batches_match_single_faces() -> None:
    pytest.importorskip("openvino")
    from tracker.landmarker import load_landmarker

    lm = load_landmarker(None, "openvino-fp32")
    x = np.random.default_rng(0).standard_normal((MAX_BATCH + 6, 1, lm.size, lm.size))
    x = x.astype(np.float32)
    for n in (EXACT_BATCH + 3, MAX_BATCH + 6):  # padded to 16; one chunk of 64 + 6
        many = lm.engine.infer(x[:n])
        one = np.concatenate([lm.engine.infer(x[i:i + 1]) for i in range(n)])
        assert many.shape == one.shape == (n, 68, lm.size, lm.size)
        assert np.abs(many - one).max() < 1e-3
