"""Sudoku-Extreme: CSV parsing, the reference's augmentations, and the dataset builder.

Format (as the official builder): tokens = digit + 1 (pad 0, blank cell 1, digits 2..10),
vocab 11, seq_len 81, one puzzle identifier (0, "<blank>"), one set "all"; every puzzle has one
example and its own augmentations form its group. ``ignore_label_id`` is 0 (the pad id).
Augmentation: a permutation of the digits 1..9, a transpose with probability 1/2, a shuffle
of the 3 bands and of the rows inside each band, and the same for stacks and columns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trm_jax.data.builder import PuzzleBuilder, make_metadata
from trm_jax.data.csv_source import iter_puzzle_csv, source_csv
from trm_jax.data.format import (
    BLANK_IDENTIFIER_NAME,
    DatasetFormatError,
    DatasetMetadata,
    OutputExistsError,
    SplitArrays,
    write_dataset,
)
from trm_jax.data.progress import progress

HUB_REPO = "sapientinc/sudoku-extreme"
SEQ_LEN = 81
VOCAB_SIZE = 11  # pad + digits 0..9 (0 = blank)
_PARSE_CHUNK = 65536


# ----------------------------------------------------------------------------- parsing


def _strings_to_digits(strings: list[str], blank_chars: str) -> np.ndarray:
    """[n] strings of 81 chars -> [n, 81] uint8 digit values; blank chars map to 0, others to 255."""
    raw = np.frombuffer("".join(strings).encode("latin-1", errors="replace"), dtype=np.uint8).reshape(
        len(strings), SEQ_LEN
    )
    lut = np.full(256, 255, np.uint8)
    lut[np.frombuffer(b"123456789", np.uint8)] = np.arange(1, 10, dtype=np.uint8)
    for c in blank_chars:
        lut[ord(c)] = 0
    return lut[raw]


def is_valid_solution(grids: np.ndarray) -> np.ndarray:
    """[..., 9, 9] digit grids -> [...] bool: every row, column and box holds 1..9 once."""
    g = np.asarray(grids).astype(np.int32)
    bits = np.where((g >= 1) & (g <= 9), 1 << g.clip(0, 9), 1 << 10)
    full = 0b1111111110
    rows = np.bitwise_or.reduce(bits, axis=-1)
    cols = np.bitwise_or.reduce(bits, axis=-2)
    boxes = bits.reshape(*bits.shape[:-2], 3, 3, 3, 3).swapaxes(-3, -2)
    boxes = np.bitwise_or.reduce(boxes.reshape(*bits.shape[:-2], 9, 9), axis=-1)
    no_bad = ~np.any(bits == (1 << 10), axis=(-1, -2))
    return np.all(rows == full, -1) & np.all(cols == full, -1) & np.all(boxes == full, -1) & no_bad


def read_sudoku_csv(path: str | os.PathLike, min_difficulty: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read an official Sudoku CSV into ([n, 9, 9] puzzles, [n, 9, 9] solutions), uint8 digits (0 = blank).

    Questions use '.' (or '0') for blanks; answers must be complete valid grids agreeing with
    the givens. Rows with rating < ``min_difficulty`` are skipped. Errors name the file and line.
    """
    puzzles, solutions = [], []
    qs: list[str] = []
    ans: list[str] = []
    lines: list[int] = []

    def flush() -> None:
        if not qs:
            return
        q = _strings_to_digits(qs, ".0")
        a = _strings_to_digits(ans, "")
        for arr, what in ((q, "question"), (a, "answer")):
            bad = np.nonzero(np.any(arr == 255, axis=1))[0]
            if bad.size:
                i = bad[0]
                s = qs[i] if what == "question" else ans[i]
                ch = next(c for c in s if c not in ("123456789" + (".0" if what == "question" else "")))
                raise DatasetFormatError(f"{path}: line {lines[i]}: unknown character {ch!r} in {what}")
        given = q > 0
        mismatch = np.nonzero(np.any(given & (q != a), axis=1))[0]
        if mismatch.size:
            raise DatasetFormatError(f"{path}: line {lines[mismatch[0]]}: answer contradicts the question's givens")
        invalid = np.nonzero(~is_valid_solution(a.reshape(-1, 9, 9)))[0]
        if invalid.size:
            raise DatasetFormatError(f"{path}: line {lines[invalid[0]]}: answer is not a valid Sudoku solution")
        puzzles.append(q.reshape(-1, 9, 9))
        solutions.append(a.reshape(-1, 9, 9))
        qs.clear(), ans.clear(), lines.clear()

    for row in iter_puzzle_csv(path):
        if len(row.question) != SEQ_LEN or len(row.answer) != SEQ_LEN:
            raise DatasetFormatError(
                f"{path}: line {row.line}: question/answer must have {SEQ_LEN} characters, "
                f"got {len(row.question)}/{len(row.answer)}"
            )
        if min_difficulty is not None and row.rating < min_difficulty:
            continue
        qs.append(row.question)
        ans.append(row.answer)
        lines.append(row.line)
        if len(qs) >= _PARSE_CHUNK:
            flush()
    flush()
    if not puzzles:
        return np.zeros((0, 9, 9), np.uint8), np.zeros((0, 9, 9), np.uint8)
    return np.concatenate(puzzles), np.concatenate(solutions)


# ----------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class SudokuAugmentation:
    """K validity-preserving Sudoku transforms (vectorised; K = leading dim of every field).

    Applied as: transpose (if set), then ``new[i, j] = old[row_perm[i], col_perm[j]]``, then
    digits relabelled through ``digit_map`` (``digit_map[0] == 0`` keeps blanks blank).
    """

    digit_map: np.ndarray  # [K, 10]
    transpose: np.ndarray  # [K] bool
    row_perm: np.ndarray  # [K, 9]
    col_perm: np.ndarray  # [K, 9]

    @classmethod
    def random(cls, rng: np.random.Generator, k: int = 1) -> "SudokuAugmentation":
        """Draw ``k`` transforms from ``rng``."""
        digit_map = np.concatenate(
            [np.zeros((k, 1), np.int64), 1 + rng.permuted(np.tile(np.arange(9), (k, 1)), axis=1)], 1
        )
        transpose = rng.random(k) < 0.5

        def line_perm() -> np.ndarray:
            bands = rng.permuted(np.tile(np.arange(3), (k, 1)), axis=1)  # [k, 3]
            inner = rng.permuted(np.tile(np.arange(3), (k * 3, 1)), axis=1).reshape(k, 3, 3)
            return (bands[:, :, None] * 3 + inner).reshape(k, 9)

        row_perm = line_perm()
        col_perm = line_perm()
        return cls(digit_map.astype(np.int64), transpose, row_perm, col_perm)

    def __len__(self) -> int:
        return int(self.transpose.shape[0])

    def apply(self, grids: np.ndarray) -> np.ndarray:
        """[K, 9, 9] digit grids (or one [9, 9] grid when K == 1) -> transformed grids."""
        g, single = self._batched(grids)
        k = np.arange(len(self))[:, None, None]
        g = np.where(self.transpose[:, None, None], g.swapaxes(1, 2), g)
        g = g[k, self.row_perm[:, :, None], self.col_perm[:, None, :]]
        out = self.digit_map[k, g].astype(np.asarray(grids).dtype)
        return out[0] if single else out

    def invert(self, grids: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`apply`."""
        g, single = self._batched(grids)
        k = np.arange(len(self))[:, None, None]
        inv_digit = np.argsort(self.digit_map, axis=1)
        g = inv_digit[k, g]
        inv_row = np.argsort(self.row_perm, axis=1)
        inv_col = np.argsort(self.col_perm, axis=1)
        g = g[k, inv_row[:, :, None], inv_col[:, None, :]]
        g = np.where(self.transpose[:, None, None], g.swapaxes(1, 2), g)
        out = g.astype(np.asarray(grids).dtype)
        return out[0] if single else out

    def _batched(self, grids: np.ndarray) -> tuple[np.ndarray, bool]:
        g = np.asarray(grids)
        single = g.ndim == 2
        if single:
            g = g[None]
        if g.shape != (len(self), 9, 9):
            raise ValueError(f"expected grids of shape [{len(self)}, 9, 9], got {np.asarray(grids).shape}")
        return g.astype(np.int64), single


# ----------------------------------------------------------------------------- builder


def build_split_arrays(
    puzzles: np.ndarray, solutions: np.ndarray, num_aug: int, rng: np.random.Generator
) -> SplitArrays:
    """One group per puzzle: the original then ``num_aug`` augmentations, one example each."""
    b = PuzzleBuilder(SEQ_LEN)
    with progress(
        zip(puzzles, solutions),
        total=len(puzzles),
        desc=f"building Sudoku puzzles and {num_aug} augmentations each",
        unit="puzzle",
    ) as pairs:
        for q, a in pairs:
            if num_aug > 0:
                aug = SudokuAugmentation.random(rng, num_aug)
                qs = np.concatenate([q[None], aug.apply(np.broadcast_to(q, (num_aug, 9, 9)))])
                as_ = np.concatenate([a[None], aug.apply(np.broadcast_to(a, (num_aug, 9, 9)))])
            else:
                qs, as_ = q[None], a[None]
            tokens_q = qs.reshape(-1, SEQ_LEN).astype(np.uint8) + 1
            tokens_a = as_.reshape(-1, SEQ_LEN).astype(np.uint8) + 1
            b.add_single_example_puzzles(tokens_q, tokens_a, identifier=0)
            b.end_group()
    return b.build()


def sudoku_metadata(arrays: SplitArrays) -> DatasetMetadata:
    """The official Sudoku metadata for one split."""
    return make_metadata(
        {"all": arrays},
        pad_id=0,
        ignore_label_id=0,
        blank_identifier_id=0,
        vocab_size=VOCAB_SIZE,
        seq_len=SEQ_LEN,
        num_puzzle_identifiers=1,
    )


def build_sudoku_dataset(
    out_dir: str | os.PathLike,
    *,
    source_dir: str | os.PathLike | None = None,
    hub_repo: str | None = HUB_REPO,
    subsample_size: int | None = None,
    num_aug: int = 0,
    min_difficulty: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Build a Sudoku dataset directory from ``source_dir/{train,test}.csv`` (or the hub).

    ``subsample_size`` random training puzzles are kept (all when None); ``num_aug``
    augmentations are added per training puzzle; the test split is never subsampled or
    augmented. ``min_difficulty`` filters both splits by rating. Deterministic given ``seed``.
    """
    if Path(out_dir).exists() and not overwrite:  # fail before the expensive part
        raise OutputExistsError(out_dir)
    if num_aug < 0 or (subsample_size is not None and subsample_size <= 0):
        raise ValueError("num_aug must be >= 0 and subsample_size > 0")
    rng = np.random.default_rng(seed)
    splits, metadata = {}, {}
    for split in ("train", "test"):
        path = source_csv(split, source_dir, hub_repo if source_dir is None else None)
        puzzles, solutions = read_sudoku_csv(path, min_difficulty)
        if puzzles.shape[0] == 0:
            raise DatasetFormatError(f"{path}: no puzzles (after the min_difficulty filter)")
        if split == "train" and subsample_size is not None and subsample_size < puzzles.shape[0]:
            keep = rng.choice(puzzles.shape[0], size=subsample_size, replace=False)
            puzzles, solutions = puzzles[keep], solutions[keep]
        arrays = build_split_arrays(puzzles, solutions, num_aug if split == "train" else 0, rng)
        splits[split] = {"all": arrays}
        metadata[split] = sudoku_metadata(arrays)
    return write_dataset(out_dir, splits, metadata, [BLANK_IDENTIFIER_NAME], overwrite=overwrite)


def tokens_to_grid(tokens: np.ndarray) -> np.ndarray:
    """Dataset tokens [..., 81] -> digit grids [..., 9, 9] (pad/blank -> 0)."""
    t = np.asarray(tokens).astype(np.int64)
    return np.clip(t - 1, 0, 9).reshape(*t.shape[:-1], 9, 9)


__all__ = [
    "HUB_REPO",
    "SEQ_LEN",
    "VOCAB_SIZE",
    "SudokuAugmentation",
    "build_split_arrays",
    "build_sudoku_dataset",
    "is_valid_solution",
    "read_sudoku_csv",
    "sudoku_metadata",
    "tokens_to_grid",
]
