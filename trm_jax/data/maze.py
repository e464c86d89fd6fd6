"""Maze-Hard: CSV parsing and the dataset builder.

Format (as the official builder): characters ``"# SGo"`` (wall, open, start, goal, path) map to
tokens 1..5 (pad 0), vocab 6, seq_len = side^2 (900 for 30x30), one puzzle identifier (0),
one set "all"; one example per puzzle, a group = a maze and its augmentations.
With ``aug`` each training maze gets all 8 dihedral transforms (:mod:`trm_jax.data.dihedral`;
transform 0 = identity).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from trm_jax.data.builder import PuzzleBuilder, make_metadata
from trm_jax.data.csv_source import iter_puzzle_csv, source_csv
from trm_jax.data.dihedral import dihedral
from trm_jax.data.format import (
    BLANK_IDENTIFIER_NAME,
    DatasetFormatError,
    DatasetMetadata,
    OutputExistsError,
    SplitArrays,
    write_dataset,
)
from trm_jax.data.progress import progress

HUB_REPO = "sapientinc/maze-30x30-hard-1k"
CHARSET = "# SGo"
WALL, OPEN, START, GOAL, PATH = 1, 2, 3, 4, 5  # token ids
VOCAB_SIZE = len(CHARSET) + 1


def _char_lut() -> np.ndarray:
    lut = np.zeros(256, np.uint8)  # 0 = unknown character
    for i, ch in enumerate(CHARSET):
        lut[ord(ch)] = i + 1
    return lut


_LUT = _char_lut()


def encode_maze(text: str) -> np.ndarray:
    """A maze string in ``CHARSET`` -> [len] uint8 tokens (ValueError on an unknown character)."""
    raw = np.frombuffer(text.encode("latin-1", errors="replace"), np.uint8)
    tok = _LUT[raw]
    if raw.shape[0] != len(text) or np.any(tok == 0):
        bad = next(ch for ch in text if ch not in CHARSET)
        raise ValueError(f"unknown character {bad!r} (expected one of {CHARSET!r})")
    return tok


def decode_maze(tokens: np.ndarray) -> str:
    """Tokens 1..5 -> maze string (pad 0 -> '?')."""
    return "".join(("?" + CHARSET)[int(t)] if 0 <= int(t) <= 5 else "?" for t in np.asarray(tokens).reshape(-1))


def read_maze_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read an official maze CSV into ([n, side, side], [n, side, side]) uint8 tokens.

    Every question/answer must be a square grid of the same side as the first row, using only
    ``CHARSET``; errors name the file and line.
    """
    qs, as_ = [], []
    side = None
    for row in iter_puzzle_csv(path):
        if side is None:
            side = math.isqrt(len(row.question))
            if side * side != len(row.question) or side == 0:
                raise DatasetFormatError(
                    f"{path}: line {row.line}: question length {len(row.question)} is not a square"
                )
        for what, s in (("question", row.question), ("answer", row.answer)):
            if len(s) != side * side:
                raise DatasetFormatError(
                    f"{path}: line {row.line}: {what} has {len(s)} characters, expected {side * side} ({side}x{side})"
                )
            try:
                tok = encode_maze(s)
            except ValueError as e:
                raise DatasetFormatError(f"{path}: line {row.line}: {what}: {e}") from None
            (qs if what == "question" else as_).append(tok.reshape(side, side))
    if not qs:
        raise DatasetFormatError(f"{path}: no mazes")
    return np.stack(qs), np.stack(as_)


def build_split_arrays(inputs: np.ndarray, labels: np.ndarray, aug: bool) -> SplitArrays:
    """One group per maze: the maze, then (if ``aug``) its 7 other dihedral transforms."""
    n, side, _ = inputs.shape
    b = PuzzleBuilder(side * side)
    tids = range(8) if aug else range(1)
    with progress(zip(inputs, labels), total=len(inputs), desc="building mazes", unit="maze") as pairs:
        for q, a in pairs:
            qs = np.stack([dihedral(q, t).reshape(-1) for t in tids])
            as_ = np.stack([dihedral(a, t).reshape(-1) for t in tids])
            b.add_single_example_puzzles(qs, as_, identifier=0)
            b.end_group()
    return b.build()


def maze_metadata(arrays: SplitArrays) -> DatasetMetadata:
    """The official maze metadata for one split."""
    return make_metadata(
        {"all": arrays},
        pad_id=0,
        ignore_label_id=0,
        blank_identifier_id=0,
        vocab_size=VOCAB_SIZE,
        seq_len=int(arrays.inputs.shape[1]),
        num_puzzle_identifiers=1,
    )


def build_maze_dataset(
    out_dir: str | os.PathLike,
    *,
    source_dir: str | os.PathLike | None = None,
    hub_repo: str | None = HUB_REPO,
    subsample_size: int | None = None,
    aug: bool = False,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Build a maze dataset directory from ``source_dir/{train,test}.csv`` (or the hub).

    ``subsample_size`` random training mazes are kept (all when None); ``aug`` adds the 8
    dihedral transforms to training mazes. Both splits must have the same grid side.
    """
    if Path(out_dir).exists() and not overwrite:
        raise OutputExistsError(out_dir)
    if subsample_size is not None and subsample_size <= 0:
        raise ValueError("subsample_size must be > 0")
    rng = np.random.default_rng(seed)
    splits, metadata = {}, {}
    for split in ("train", "test"):
        path = source_csv(split, source_dir, hub_repo if source_dir is None else None)
        inputs, labels = read_maze_csv(path)
        if split == "train" and subsample_size is not None and subsample_size < inputs.shape[0]:
            keep = rng.choice(inputs.shape[0], size=subsample_size, replace=False)
            inputs, labels = inputs[keep], labels[keep]
        arrays = build_split_arrays(inputs, labels, aug and split == "train")
        splits[split] = {"all": arrays}
        metadata[split] = maze_metadata(arrays)
    if metadata["train"].seq_len != metadata["test"].seq_len:
        raise DatasetFormatError(
            f"train and test mazes differ in size ({metadata['train'].seq_len} vs {metadata['test'].seq_len} cells)"
        )
    return write_dataset(out_dir, splits, metadata, [BLANK_IDENTIFIER_NAME], overwrite=overwrite)


def tokens_to_grid(tokens: np.ndarray) -> np.ndarray:
    """Dataset tokens [..., side*side] -> [..., side, side]."""
    t = np.asarray(tokens)
    side = math.isqrt(t.shape[-1])
    return t.reshape(*t.shape[:-1], side, side)
