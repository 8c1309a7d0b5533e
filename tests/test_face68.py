"""The 68-point topology: regions partition the points, the mirror maps left onto right, the mesh."""

from __future__ import annotations

import numpy as np
import pytest

from tracker import face68
from tracker.face68 import CONNECTIONS, FLIP_PERM, N_POINTS, REGIONS
from tracker.outputs.headpose import FACE_MODEL_68

# (subject's right, subject's left): the mirror swaps them
MIRROR_PAIRS = [
    ("right_brow", "left_brow"),
    ("right_eye", "left_eye"),
]
SELF_MIRRORED = ["jaw", "nose_bridge", "nose_lower", "outer_lip", "inner_lip"]
MIDLINE = [8, 27, 28, 29, 30, 33, 51, 57, 62, 66]
TWINS = [(0, 16), (8, 8), (17, 26), (31, 35), (36, 45), (39, 42), (48, 54), (60, 64)]


def test_regions_partition_the_points_in_order() -> None:
    assert [i for r in REGIONS.values() for i in r] == list(range(N_POINTS))
    assert set(face68.CLOSED_REGIONS) <= set(REGIONS)
    assert list(face68.BROWS) + list(face68.NOSE) + list(face68.EYES) == list(range(17, 48))
    assert list(face68.MOUTH) == list(range(48, 68))


def test_flip_perm_is_an_involution() -> None:
    assert sorted(FLIP_PERM.tolist()) == list(range(N_POINTS))
    assert np.array_equal(FLIP_PERM[FLIP_PERM], np.arange(N_POINTS))


@pytest.mark.parametrize(("right", "left"), MIRROR_PAIRS)
def test_flip_maps_each_right_region_onto_its_left_twin(right: str, left: str) -> None:
    assert sorted(FLIP_PERM[list(REGIONS[right])].tolist()) == list(REGIONS[left])
    assert sorted(FLIP_PERM[list(REGIONS[left])].tolist()) == list(REGIONS[right])


@pytest.mark.parametrize("name", SELF_MIRRORED)
def test_flip_maps_midline_regions_onto_themselves(name: str) -> None:
    assert sorted(FLIP_PERM[list(REGIONS[name])].tolist()) == list(REGIONS[name])


@pytest.mark.parametrize(("a", "b"), TWINS)
def test_flip_swaps_twins(a: int, b: int) -> None:
    assert FLIP_PERM[a] == b and FLIP_PERM[b] == a


def test_only_midline_points_are_fixed() -> None:
    assert np.flatnonzero(FLIP_PERM == np.arange(N_POINTS)).tolist() == MIDLINE


def test_mirrored_face_model_is_the_model_with_flip_perm() -> None:
    """The symmetric head-pose model, mirrored (x -> -x) and relabelled, is itself."""
    mirrored = FACE_MODEL_68 * np.array([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(mirrored[FLIP_PERM], FACE_MODEL_68, atol=1e-9)


@pytest.mark.parametrize(("right", "left"), [
    *MIRROR_PAIRS,
    ((face68.RIGHT_EYE_OUTER,), (face68.LEFT_EYE_OUTER,)),
    ((face68.RIGHT_MOUTH_CORNER,), (face68.LEFT_MOUTH_CORNER,)),
])
def test_right_means_the_subjects_right_on_the_image_left(right: str | tuple[int],
                                                          left: str | tuple[int]) -> None:
    """FACE_MODEL_68 has x toward the image's right for a face looking into the camera."""
    def mean_x(part: str | tuple[int]) -> float:
        idx = list(REGIONS[part]) if isinstance(part, str) else list(part)
        return float(FACE_MODEL_68[idx, 0].mean())

    assert mean_x(right) < 0 < mean_x(left)


def test_named_points() -> None:
    assert face68.OUTER_EYE_CORNERS == (36, 45)
    assert face68.RIGHT_EYE[0] == face68.RIGHT_EYE_OUTER
    assert face68.LEFT_EYE_OUTER in face68.LEFT_EYE
    assert face68.NOSE_TIP == face68.NOSE_BRIDGE[-1]
    assert (face68.RIGHT_MOUTH_CORNER, face68.UPPER_LIP_TOP, face68.LEFT_MOUTH_CORNER) == (48, 51, 54)


def test_connections_are_the_region_polylines() -> None:
    assert len(CONNECTIONS) == 63
    assert len(set(CONNECTIONS)) == 63
    assert {i for pair in CONNECTIONS for i in pair} == set(range(N_POINTS))
    assert all(0 <= i < N_POINTS and 0 <= j < N_POINTS and i != j for i, j in CONNECTIONS)
    region_of = {i: name for name, r in REGIONS.items() for i in r}
    assert all(region_of[i] == region_of[j] for i, j in CONNECTIONS)  # no edge between regions


@pytest.mark.parametrize(("name", "closed"), [
    ("jaw", False), ("right_brow", False), ("left_brow", False), ("nose_bridge", False),
    ("nose_lower", False), ("right_eye", True), ("left_eye", True), ("outer_lip", True),
    ("inner_lip", True),
])
def test_each_region_is_an_open_or_closed_chain(name: str, closed: bool) -> None:
    r = REGIONS[name]
    edges = [(i, j) for i, j in CONNECTIONS if i in r]
    chain = list(zip(r[:-1], r[1:], strict=True))
    assert edges == chain + ([(r[-1], r[0])] if closed else [])
