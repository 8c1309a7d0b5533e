"""annotate/draw_hud put pixels where they should and nowhere else; the mesh is face68's."""

from __future__ import annotations

import numpy as np
import pytest

from tracker.face68 import CONNECTIONS
from tracker.outputs.render import (
    REGION_COLORS,
    annotate,
    confidence_colors,
    draw_hud,
    face_color,
)
from tracker.types import Box, Frame, Landmarks, TrackedFrame

H, W = 120, 160


def _face(points: np.ndarray, confidence: np.ndarray, face_id: int = 0, box: Box | None = None):
    box = box or Box(100.0, 70.0, 150.0, 110.0)
    return Landmarks(0, 0.0, face_id, points.astype(np.float32), confidence, 0.9, box)


def _grid_points() -> np.ndarray:
    """68 points on a 12-column grid, 8 px apart, well inside the frame."""
    i = np.arange(68)
    return np.stack([10.0 + 8 * (i % 12), 10.0 + 8 * (i // 12)], axis=1)


def _tracked(image: np.ndarray, *faces: Landmarks) -> TrackedFrame:
    return TrackedFrame(Frame(0, 0.0, image), tuple(faces))


@pytest.mark.parametrize(
    ("color_by", "confidence", "expected"),
    [
        ("confidence", np.ones(68, np.float32), lambda c: confidence_colors(c)),
        ("confidence", np.zeros(68, np.float32), lambda c: confidence_colors(c)),
        ("confidence", np.linspace(0, 1, 68, dtype=np.float32), lambda c: confidence_colors(c)),
        ("region", np.ones(68, np.float32), lambda c: REGION_COLORS),
    ],
)
def test_points_are_drawn_in_their_colour(color_by, confidence, expected) -> None:
    image = np.zeros((H, W, 3), np.uint8)
    points = _grid_points()
    out = annotate(
        image, _tracked(image, _face(points, confidence)), color_by=color_by, mesh=False,
        boxes=False,
    )
    colors = expected(confidence)
    xs, ys = points[:, 0].astype(int), points[:, 1].astype(int)
    np.testing.assert_array_equal(out[ys, xs], colors)  # centre of each dot is full colour
    assert not image.any()  # input untouched


def test_subpixel_point_lands_at_its_position() -> None:
    image = np.zeros((H, W, 3), np.uint8)
    points = np.full((68, 2), np.nan)
    points[0] = (40.5, 30.5)  # between pixels 40 and 41
    out = annotate(image, _tracked(image, _face(points, np.ones(68, np.float32))),
                   mesh=False, boxes=False)
    ys, xs = np.nonzero(out.any(axis=2))
    assert abs(xs.mean() - 40.5) < 0.25 and abs(ys.mean() - 30.5) < 0.25
    assert xs.max() - xs.min() <= 8  # a small dot, and the NaN points were skipped


def test_nothing_drawn_away_from_points_without_mesh_and_box() -> None:
    image = np.zeros((H, W, 3), np.uint8)
    points = _grid_points()
    out = annotate(image, _tracked(image, _face(points, np.ones(68, np.float32))),
                   mesh=False, boxes=False)
    ys, xs = np.nonzero(out.any(axis=2))
    nearest = np.abs(points[None, :, :] - np.stack([xs, ys], 1)[:, None, :]).max(axis=2).min(1)
    assert nearest.max() <= 3.5


def test_mesh_draws_between_connected_points() -> None:
    image = np.zeros((H, W, 3), np.uint8)
    points = _grid_points()
    face = _face(points, np.ones(68, np.float32))
    plain = annotate(image, _tracked(image, face), mesh=False, boxes=False)
    meshed = annotate(image, _tracked(image, face), mesh=True, boxes=False)
    i, j = 0, 1  # jaw edge: (10, 10) -> (18, 10); its midpoint is outside both dots
    assert (i, j) in CONNECTIONS
    mx, my = ((points[i] + points[j]) / 2).astype(int)
    assert meshed[my, mx].max() > 100 and plain[my, mx].max() == 0


def test_box_and_id_are_drawn_in_face_colour() -> None:
    image = np.zeros((H, W, 3), np.uint8)
    box = Box(60.0, 50.0, 120.0, 100.0)
    face = _face(np.full((68, 2), np.nan), np.ones(68, np.float32), face_id=2, box=box)
    out = annotate(image, _tracked(image, face), mesh=False)
    edge = out[75, 60].astype(int)  # left edge of the box (anti-aliased)
    np.testing.assert_allclose(edge, face_color(2), atol=32)
    assert out[35:50, 60:100].any()  # the "id 2" label above the box
    assert not out[60:90, 70:110].any()  # box interior untouched


@pytest.mark.parametrize("n_faces", [0, 1, 3])
def test_annotate_copies_unless_inplace(n_faces: int) -> None:
    image = np.zeros((H, W, 3), np.uint8)
    faces = [_face(_grid_points(), np.ones(68, np.float32), k) for k in range(n_faces)]
    out = annotate(image, _tracked(image, *faces))
    assert out is not image and not image.any()
    assert out.any() == (n_faces > 0)
    same = annotate(image, _tracked(image, *faces), inplace=True)
    assert same is image
    np.testing.assert_array_equal(image, out)


@pytest.mark.parametrize(
    "image",
    [np.zeros((H, W), np.uint8), np.zeros((H, W, 3), np.float32), np.zeros((H, W, 4), np.uint8)],
)
def test_annotate_rejects_non_rgb_uint8(image: np.ndarray) -> None:
    with pytest.raises(ValueError):
        annotate(image, _tracked(image))


def test_annotate_inplace_needs_contiguous() -> None:
    image = np.zeros((H, 2 * W, 3), np.uint8)[:, ::2]
    with pytest.raises(ValueError):
        annotate(image, _tracked(image), inplace=True)


@pytest.mark.parametrize("corner", ["top-left", "top-right"])
def test_hud_writes_in_its_corner_only(corner: str) -> None:
    image = np.full((H, W, 3), 200, np.uint8)
    out = draw_hud(image, ["30.0 fps", "latency 12 ms"], corner=corner)
    assert out is image
    panel = image[:40, :60] if corner == "top-left" else image[:40, -60:]
    other = image[:40, -20:] if corner == "top-left" else image[:40, :20]
    assert (panel > 230).any() and (panel < 200).any()  # white text on a darkened panel
    assert (other == 200).all() and (image[80:] == 200).all()


@pytest.mark.parametrize(
    ("c", "rgb"), [(0.0, (255, 0, 38)), (0.5, (255, 255, 38)), (1.0, (0, 255, 38))]
)
def test_confidence_colours(c: float, rgb: tuple[int, int, int]) -> None:
    assert tuple(confidence_colors(np.array([c]))[0]) == rgb
