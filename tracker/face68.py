"""The 68-point iBUG face topology: regions, connections, the mirror permutation, eye corners."""

from __future__ import annotations

import numpy as np

N_POINTS = 68


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
