"""ARC grids: validation, augmentations, their names, and the 30x30 token canvas.

Facts carried over from the reference TRM data pipeline:

* A grid is at most 30x30 cells, each a colour 0..9.
* Tokens on the 30x30 canvas: pad 0, end-of-grid 1, colour ``c`` -> ``c + 2``. The end-of-grid marker
  fills the row just below the grid and the column just right of it (within the grid's extent; the
  corner cell stays pad), when those fall inside the canvas.
* An augmentation is one of 8 dihedral transforms composed with a permutation of colours 1..9
  (0 stays 0), applied as ``dihedral(colour_map[grid])`` (:mod:`trm_jax.data.dihedral`). Its name is
  ``<puzzle>|||t<k>|||<colour_map as 10 digits>``.
* The evaluator crops a predicted canvas to the largest top-left rectangle holding only colour
  tokens, and identifies grids by a SHA-256 hash of their shape bytes followed by their cells.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from trm_jax.data.dihedral import NUM_DIHEDRAL, dihedral, inverse_dihedral

MAX_GRID_SIZE = 30
SEQ_LEN = MAX_GRID_SIZE * MAX_GRID_SIZE
NUM_COLOURS = 10
PAD_ID = 0
EOS_ID = 1
COLOUR_OFFSET = 2  # token = colour + COLOUR_OFFSET
VOCAB_SIZE = NUM_COLOURS + COLOUR_OFFSET
NAME_SEPARATOR = "|||"


class ArcDataError(ValueError):
    """Invalid ARC input data; the message names the file, puzzle and problem."""


# ----------------------------------------------------------------------------------------------
# Grid validation


def grid_from_json(value: Any, where: str) -> np.ndarray:
    """Converts a JSON grid (list of equal-length lists of ints 0..9) to a uint8 array.

    Args:
      value: the decoded JSON value.
      where: a description of the grid's location (file, puzzle, example) used in error messages.

    Raises:
      ArcDataError: if the value is not a rectangular 2-D grid of integers 0..9 of size 1..30.
    """
    if not isinstance(value, list) or not value or not all(isinstance(row, list) for row in value):
        raise ArcDataError(
            f"{where}: expected a non-empty list of rows (list of lists of ints), got {type(value).__name__}"
        )
    widths = {len(row) for row in value}
    if len(widths) != 1:
        raise ArcDataError(f"{where}: rows have different lengths {sorted(widths)}")
    height, width = len(value), widths.pop()
    if width == 0:
        raise ArcDataError(f"{where}: rows are empty")
    if height > MAX_GRID_SIZE or width > MAX_GRID_SIZE:
        raise ArcDataError(
            f"{where}: grid is {height}x{width}, larger than the {MAX_GRID_SIZE}x{MAX_GRID_SIZE} maximum"
        )
    for r, row in enumerate(value):
        for c, cell in enumerate(row):
            # bool is an int subclass; a JSON true/false is not a colour.
            if not isinstance(cell, int) or isinstance(cell, bool):
                raise ArcDataError(f"{where}: cell ({r}, {c}) is {cell!r}, expected an integer colour 0..9")
            if not 0 <= cell < NUM_COLOURS:
                raise ArcDataError(f"{where}: cell ({r}, {c}) is {cell}, expected a colour 0..9")
    return np.asarray(value, dtype=np.uint8)


def grid_hash(grid: np.ndarray) -> str:
    """SHA-256 hex digest of a grid: one byte per dimension, then the cells as uint8 in C order."""
    grid = np.asarray(grid)
    if grid.ndim != 2:
        raise ValueError(f"grid_hash expects a 2-D grid, got shape {grid.shape}")
    cells = np.ascontiguousarray(grid, dtype=np.uint8)
    return hashlib.sha256(bytes(grid.shape) + cells.tobytes()).hexdigest()


# ----------------------------------------------------------------------------------------------
# Dihedral transforms and colour permutations


@dataclass(frozen=True)
class ArcAugmentation:
    """A dihedral transform composed with a colour map (``colour_map[c]`` is the new colour of c)."""

    transform_id: int
    colour_map: tuple[int, ...]

    def __post_init__(self) -> None:
        if not 0 <= self.transform_id < NUM_DIHEDRAL:
            raise ValueError(f"transform_id must be in 0..7, got {self.transform_id}")
        if sorted(self.colour_map) != list(range(NUM_COLOURS)):
            raise ValueError(f"colour_map must be a permutation of 0..9, got {self.colour_map}")

    @classmethod
    def identity(cls) -> "ArcAugmentation":
        return cls(0, tuple(range(NUM_COLOURS)))

    @property
    def is_identity(self) -> bool:
        return self.transform_id == 0 and self.colour_map == tuple(range(NUM_COLOURS))

    def apply(self, grid: np.ndarray) -> np.ndarray:
        """Augments a colour grid (values 0..9): recolour, then transform."""
        mapping = np.asarray(self.colour_map, dtype=np.uint8)
        return np.ascontiguousarray(dihedral(mapping[grid], self.transform_id))

    def invert(self, grid: np.ndarray) -> np.ndarray:
        """Undoes ``apply``: inverse transform, then inverse recolouring."""
        inverse_map = np.argsort(np.asarray(self.colour_map)).astype(np.uint8)
        return np.ascontiguousarray(inverse_map[inverse_dihedral(grid, self.transform_id)])

    def suffix(self) -> str:
        """The name suffix ``|||t<k>|||<10 digits>`` recording this augmentation."""
        digits = "".join(str(c) for c in self.colour_map)
        return f"{NAME_SEPARATOR}t{self.transform_id}{NAME_SEPARATOR}{digits}"


def random_augmentation(rng: np.random.RandomState) -> ArcAugmentation:
    """Draws a uniformly random transform and a random permutation of colours 1..9 (0 fixed).

    The draws are, in order, ``rng.randint(0, 8)`` then ``rng.permutation`` of 1..9, so the same
    seeded ``RandomState`` yields the same augmentations as the reference builder.
    """
    transform_id = int(rng.randint(0, NUM_DIHEDRAL))
    perm = rng.permutation(np.arange(1, NUM_COLOURS, dtype=np.uint8))
    return ArcAugmentation(transform_id, (0, *(int(c) for c in perm)))


def augmented_name(base_name: str, augmentation: ArcAugmentation) -> str:
    """``base_name`` with the augmentation recorded as ``|||t<k>|||<perm>``."""
    return base_name + augmentation.suffix()


def parse_augmented_name(name: str) -> tuple[str, Optional[ArcAugmentation]]:
    """Splits ``name|||t<k>|||<perm>`` into (name, augmentation); a plain name gives (name, None).

    Raises:
      ValueError: if the name contains the separator but the suffix is malformed.
    """
    if NAME_SEPARATOR not in name:
        return name, None
    parts = name.split(NAME_SEPARATOR)
    if len(parts) != 3:
        raise ValueError(f"augmented puzzle name {name!r}: expected 'name|||t<k>|||<10 digits>'")
    base, transform, perm = parts
    if not (len(transform) == 2 and transform[0] == "t" and transform[1].isdigit()):
        raise ValueError(f"augmented puzzle name {name!r}: transform part {transform!r} is not t0..t7")
    if not (len(perm) == NUM_COLOURS and perm.isdigit()):
        raise ValueError(f"augmented puzzle name {name!r}: colour part {perm!r} is not 10 digits")
    try:
        augmentation = ArcAugmentation(int(transform[1]), tuple(int(ch) for ch in perm))
    except ValueError as e:
        raise ValueError(f"augmented puzzle name {name!r}: {e}") from None
    return base, augmentation


# ----------------------------------------------------------------------------------------------
# Canvas


def grid_to_canvas(grid: np.ndarray, row_offset: int = 0, col_offset: int = 0) -> np.ndarray:
    """Places a colour grid on the 30x30 token canvas at (row_offset, col_offset).

    Returns a flat uint8 array of length 900: pad 0 everywhere, colours + 2 inside the grid, and
    end-of-grid 1 on the row below the grid and the column right of it (same extent as the grid).
    """
    height, width = grid.shape
    if not (
        0 <= row_offset
        and row_offset + height <= MAX_GRID_SIZE
        and 0 <= col_offset
        and col_offset + width <= MAX_GRID_SIZE
    ):
        raise ValueError(
            f"grid {height}x{width} at offset ({row_offset}, {col_offset}) does not fit "
            f"in the {MAX_GRID_SIZE}x{MAX_GRID_SIZE} canvas"
        )
    canvas = np.full((MAX_GRID_SIZE, MAX_GRID_SIZE), PAD_ID, dtype=np.uint8)
    bottom, right = row_offset + height, col_offset + width
    canvas[row_offset:bottom, col_offset:right] = grid.astype(np.uint8) + COLOUR_OFFSET
    if bottom < MAX_GRID_SIZE:
        canvas[bottom, col_offset:right] = EOS_ID
    if right < MAX_GRID_SIZE:
        canvas[row_offset:bottom, right] = EOS_ID
    return canvas.reshape(-1)


def pair_to_canvases(
    inp: np.ndarray, out: np.ndarray, rng: Optional[np.random.RandomState] = None
) -> tuple[np.ndarray, np.ndarray]:
    """Puts an (input, output) pair on canvases, both shifted by the same random offset.

    With ``rng`` None both sit at the origin. Otherwise the offset is drawn as
    ``rng.randint(0, 30 - max height + 1)`` then the same for widths, so that both grids fit.
    """
    if rng is None:
        row_offset = col_offset = 0
    else:
        row_offset = int(rng.randint(0, MAX_GRID_SIZE - max(inp.shape[0], out.shape[0]) + 1))
        col_offset = int(rng.randint(0, MAX_GRID_SIZE - max(inp.shape[1], out.shape[1]) + 1))
    return grid_to_canvas(inp, row_offset, col_offset), grid_to_canvas(out, row_offset, col_offset)


def crop_sizes(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the evaluator's crop for a batch of canvases ``[..., 900]`` (see ``crop_canvas``)."""
    canvas = np.asarray(tokens).reshape(-1, MAX_GRID_SIZE, MAX_GRID_SIZE)
    not_colour = (canvas < COLOUR_OFFSET) | (canvas >= COLOUR_OFFSET + NUM_COLOURS)
    # Width of the colour run starting at column 0 of each row, then the running minimum down
    # the rows: the widest top-left rectangle with r rows has the smallest width of its rows.
    run = np.where(not_colour.any(axis=2), not_colour.argmax(axis=2), MAX_GRID_SIZE)
    widths = np.minimum.accumulate(run, axis=1)
    areas = widths * np.arange(1, MAX_GRID_SIZE + 1)
    best = areas.argmax(axis=1)  # first maximum: fewest rows among ties
    batch = np.arange(canvas.shape[0])
    found = areas[batch, best] > 0
    return np.where(found, best + 1, 0), np.where(found, widths[batch, best], 0)


def crop_canvas(tokens: np.ndarray, row_offset: int = 0, col_offset: int = 0) -> np.ndarray:
    """Reads a colour grid back from a canvas of 900 tokens (the evaluator's crop).

    Takes the rectangle of largest area anchored at (row_offset, col_offset) (the top-left corner
    by default, as the evaluator does) whose cells are all colour tokens (2..11); among rectangles
    of equal area the one with fewer rows wins. Returns colours 0..9 as uint8; a canvas whose
    anchor cell is not a colour gives an empty (0, 0) grid.
    """
    canvas = np.asarray(tokens).reshape(MAX_GRID_SIZE, MAX_GRID_SIZE)
    if row_offset or col_offset:
        shifted = np.full_like(canvas, PAD_ID)
        shifted[: MAX_GRID_SIZE - row_offset, : MAX_GRID_SIZE - col_offset] = canvas[row_offset:, col_offset:]
        canvas = shifted
    rows, cols = crop_sizes(canvas)
    return cropped_grid(canvas, int(rows[0]), int(cols[0]))


def cropped_grid(tokens: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """The top-left ``rows x cols`` cells of a canvas as colours 0..9 (uint8)."""
    canvas = np.asarray(tokens).reshape(MAX_GRID_SIZE, MAX_GRID_SIZE)
    return (canvas[:rows, :cols].astype(np.int64) - COLOUR_OFFSET).astype(np.uint8)


def locate_grid(tokens: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Finds a (possibly translated) grid on a well-formed canvas such as a dataset example.

    Returns the colour grid under the bounding box of all colour tokens and its top-left offset;
    (empty grid, (0, 0)) when there is no colour token.

    Raises:
      ValueError: if the bounding box holds non-colour tokens (not a canvas written by the builder).
    """
    canvas = np.asarray(tokens).reshape(MAX_GRID_SIZE, MAX_GRID_SIZE)
    is_colour = (canvas >= COLOUR_OFFSET) & (canvas < COLOUR_OFFSET + NUM_COLOURS)
    rows, cols = np.nonzero(is_colour.any(axis=1))[0], np.nonzero(is_colour.any(axis=0))[0]
    if rows.size == 0:
        return np.zeros((0, 0), dtype=np.uint8), (0, 0)
    box = canvas[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    if not is_colour[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].all():
        raise ValueError("canvas colour tokens do not form one rectangle")
    return (box.astype(np.int64) - COLOUR_OFFSET).astype(np.uint8), (int(rows[0]), int(cols[0]))
