"""The 8 symmetries of a square grid (the dihedral group D4), as the reference numbers them.

Transform ids: 0 identity, 1/2/3 rotation by 90/180/270 degrees counter-clockwise (as
``np.rot90``), 4 left-right mirror, 5 up-down mirror, 6 transpose, 7 anti-transpose (the mirror
of the 90-degree rotation). Maze augmentation and ARC augmentation both use them.
"""

from __future__ import annotations

import numpy as np

NUM_DIHEDRAL = 8

# DIHEDRAL_INVERSE[k] is the transform that undoes transform k (rotations by 90 and 270 degrees
# undo each other; every reflection and the 180-degree rotation is its own inverse).
DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)


def dihedral(grid: np.ndarray, transform_id: int) -> np.ndarray:
    """Applies dihedral transform ``transform_id`` (0..7) to the last two axes of ``grid``.

    Returns a view where numpy can (call ``np.ascontiguousarray`` to own the data).
    """
    g = np.asarray(grid)
    if transform_id == 0:
        return g
    if transform_id in (1, 2, 3):
        return np.rot90(g, k=transform_id, axes=(-2, -1))
    if transform_id == 4:
        return np.flip(g, -1)
    if transform_id == 5:
        return np.flip(g, -2)
    if transform_id == 6:
        return np.swapaxes(g, -1, -2)
    if transform_id == 7:
        return np.flip(np.rot90(g, k=1, axes=(-2, -1)), -1)
    raise ValueError(f"dihedral transform id must be in 0..7, got {transform_id}")


def inverse_dihedral(grid: np.ndarray, transform_id: int) -> np.ndarray:
    """Undoes ``dihedral(., transform_id)``."""
    if not 0 <= transform_id < NUM_DIHEDRAL:
        raise ValueError(f"dihedral transform id must be in 0..7, got {transform_id}")
    return dihedral(grid, DIHEDRAL_INVERSE[transform_id])
