"""The 68-point iBUG face topology: regions, connections, the mirror permutation, eye corners.

Points are 0-based, in the iBUG 300-W order: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47,
mouth 48-67.

Convention: ``left`` and ``right`` always mean the *subject's*. For a face looking into the
camera the subject's right side appears on the image's left, so :data:`RIGHT_EYE` (36-41) is
the eye on the image's left and :data:`LEFT_EYE` (42-47) the one on the image's right; likewise
the jaw starts (point 0) at the subject's right ear. (300-W labels, and every faces68 image,
have point 36 left of point 45 in the image.)

Region names are the ones the websocket protocol sends (``landmarks.names`` are
``f"{region}_{k}"``), so they are part of the wire format.
"""

from __future__ import annotations

import numpy as np

N_POINTS = 68

JAW = range(0, 17)
"""Jaw line, from the subject's right (image left) over the chin (8) to the left."""
RIGHT_BROW = range(17, 22)
LEFT_BROW = range(22, 27)
NOSE_BRIDGE = range(27, 31)
"""Bridge of the nose, top to tip (30)."""
NOSE_LOWER = range(31, 36)
"""Lower nose, from the subject's right nostril to the left."""
RIGHT_EYE = range(36, 42)
"""The subject's right eye (on the image's left): outer corner 36, upper lid, inner 39, lower lid."""
LEFT_EYE = range(42, 48)
"""The subject's left eye (on the image's right): inner corner 42, upper lid, outer 45, lower lid."""
OUTER_LIP = range(48, 60)
"""Outer lip contour from the subject's right mouth corner (48); left corner 54."""
INNER_LIP = range(60, 68)

REGIONS: dict[str, range] = {
    "jaw": JAW,
    "right_brow": RIGHT_BROW,
    "left_brow": LEFT_BROW,
    "nose_bridge": NOSE_BRIDGE,
    "nose_lower": NOSE_LOWER,
    "right_eye": RIGHT_EYE,
    "left_eye": LEFT_EYE,
    "outer_lip": OUTER_LIP,
    "inner_lip": INNER_LIP,
}
"""The named regions in point order; together they cover 0..67 once each."""

CLOSED_REGIONS: frozenset[str] = frozenset({"right_eye", "left_eye", "outer_lip", "inner_lip"})
"""Regions drawn as closed loops (the others are open polylines)."""

BROWS = range(RIGHT_BROW.start, LEFT_BROW.stop)
NOSE = range(NOSE_BRIDGE.start, NOSE_LOWER.stop)
EYES = range(RIGHT_EYE.start, LEFT_EYE.stop)
MOUTH = range(OUTER_LIP.start, INNER_LIP.stop)

NOSE_TIP = 30
RIGHT_EYE_OUTER = 36
"""Outer corner of the subject's right eye (image left)."""
LEFT_EYE_OUTER = 45
"""Outer corner of the subject's left eye (image right)."""
OUTER_EYE_CORNERS: tuple[int, int] = (RIGHT_EYE_OUTER, LEFT_EYE_OUTER)
"""The two outer eye corners, whose distance is the 300-W inter-ocular normaliser."""
RIGHT_MOUTH_CORNER = 48
LEFT_MOUTH_CORNER = 54
UPPER_LIP_TOP = 51
"""Top of the upper lip on the midline."""


def _polyline(indices: range, closed: bool) -> list[tuple[int, int]]:
    idx = list(indices)
    pairs = list(zip(idx[:-1], idx[1:], strict=True))
    if closed:
        pairs.append((idx[-1], idx[0]))
    return pairs


CONNECTIONS: tuple[tuple[int, int], ...] = tuple(
    pair for name, r in REGIONS.items() for pair in _polyline(r, name in CLOSED_REGIONS)
)
"""Edges of the drawn face mesh as 0-based ``(i, j)`` pairs (63): each region's polyline in
:data:`REGIONS` order, closing the loops of :data:`CLOSED_REGIONS`."""


def _flip_permutation() -> np.ndarray:
    pairs = [(i, 16 - i) for i in range(8)]  # jaw
    pairs += [(17 + i, 26 - i) for i in range(5)]  # brows
    pairs += [(31, 35), (32, 34)]  # nose bottom
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer mouth
    pairs += [(60, 64), (61, 63), (65, 67)]  # inner mouth
    perm = np.arange(N_POINTS)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


FLIP_PERM = _flip_permutation()
"""The mirror permutation, an involution: after flipping an image left-right, ``points[FLIP_PERM]``
gives each label its own side back (left/right twins swap; midline points map to themselves)."""
