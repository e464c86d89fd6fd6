"""Building the arrays of one dataset split: examples, puzzles and groups with the official bookkeeping.

:class:`PuzzleBuilder` accumulates the examples of one set and returns
:class:`~trm_jax.data.format.SplitArrays`; :func:`make_metadata` computes the totals of a
split's :class:`~trm_jax.data.format.DatasetMetadata`. Every builder (Sudoku, maze, ARC) uses
them, then :func:`~trm_jax.data.format.write_dataset`.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from trm_jax.data.format import DatasetMetadata, SplitArrays


class PuzzleBuilder:
    """Accumulates examples into puzzles and puzzles into groups, as the official builders do.

    Usage::

        b = PuzzleBuilder(seq_len=81)
        for group in groups:
            for puzzle in group:
                b.add_puzzle(inputs, labels, identifier)   # inputs/labels: [n_examples, seq_len]
            b.end_group()
        arrays = b.build()

    Token arrays are stored as uint8 (what the official builders write) when every value fits,
    otherwise int32. Index arrays are int32.
    """

    def __init__(self, seq_len: int) -> None:
        self.seq_len = int(seq_len)
        self._inputs: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._identifiers: list[int] = []
        self._puzzle_indices: list[int] = [0]
        self._group_indices: list[int] = [0]
        self._num_examples = 0

    @property
    def num_examples(self) -> int:
        return self._num_examples

    @property
    def num_puzzles(self) -> int:
        return len(self._identifiers)

    @property
    def num_groups(self) -> int:
        return len(self._group_indices) - 1

    def add_puzzle(self, inputs: np.ndarray, labels: np.ndarray, identifier: int) -> None:
        """Append one puzzle made of ``len(inputs)`` examples (each already flattened to seq_len)."""
        inputs = np.asarray(inputs)
        labels = np.asarray(labels)
        if inputs.ndim == 1:
            inputs, labels = inputs[None], labels[None]
        if inputs.shape != labels.shape or inputs.ndim != 2 or inputs.shape[1] != self.seq_len:
            raise ValueError(
                f"add_puzzle: expected inputs and labels of shape [n, {self.seq_len}], "
                f"got {inputs.shape} and {labels.shape}"
            )
        if inputs.shape[0] == 0:
            raise ValueError("add_puzzle: a puzzle needs at least one example")
        self._inputs.append(inputs)
        self._labels.append(labels)
        self._num_examples += inputs.shape[0]
        self._puzzle_indices.append(self._num_examples)
        self._identifiers.append(int(identifier))

    def add_single_example_puzzles(self, inputs: np.ndarray, labels: np.ndarray, identifier: int) -> None:
        """Append ``len(inputs)`` puzzles of one example each (Sudoku/Maze layout), in bulk."""
        inputs = np.asarray(inputs)
        labels = np.asarray(labels)
        if inputs.shape != labels.shape or inputs.ndim != 2 or inputs.shape[1] != self.seq_len:
            raise ValueError(
                f"add_single_example_puzzles: expected [n, {self.seq_len}] arrays, "
                f"got {inputs.shape} and {labels.shape}"
            )
        n = inputs.shape[0]
        self._inputs.append(inputs)
        self._labels.append(labels)
        self._puzzle_indices.extend(range(self._num_examples + 1, self._num_examples + n + 1))
        self._num_examples += n
        self._identifiers.extend([int(identifier)] * n)

    def end_group(self) -> None:
        """Close the current group (the puzzles added since the previous ``end_group``)."""
        if self.num_puzzles == self._group_indices[-1]:
            raise ValueError("end_group: the group is empty (add a puzzle first)")
        self._group_indices.append(self.num_puzzles)

    def build(self) -> SplitArrays:
        """Return the accumulated arrays (every added puzzle must belong to a closed group)."""
        if self.num_puzzles != self._group_indices[-1]:
            raise ValueError("build: the last group is not closed (call end_group)")

        def stack(parts: list[np.ndarray]) -> np.ndarray:
            if not parts:
                return np.zeros((0, self.seq_len), np.uint8)
            arr = np.concatenate(parts, axis=0)
            if arr.size and (arr.min() < 0 or arr.max() > 255):
                return arr.astype(np.int32)
            return arr.astype(np.uint8)

        arrays = SplitArrays(
            inputs=stack(self._inputs),
            labels=stack(self._labels),
            puzzle_identifiers=np.asarray(self._identifiers, dtype=np.int32),
            puzzle_indices=np.asarray(self._puzzle_indices, dtype=np.int32),
            group_indices=np.asarray(self._group_indices, dtype=np.int32),
        )
        arrays.validate(self.seq_len)
        return arrays


def make_metadata(
    sets: Mapping[str, SplitArrays],
    *,
    pad_id: int,
    ignore_label_id: int | None,
    blank_identifier_id: int,
    vocab_size: int,
    seq_len: int,
    num_puzzle_identifiers: int,
) -> DatasetMetadata:
    """Metadata of one split; totals (groups, puzzles, mean examples per puzzle) summed over its sets."""
    total_groups = sum(a.num_groups for a in sets.values())
    total_puzzles = sum(a.num_puzzles for a in sets.values())
    total_examples = sum(a.num_examples for a in sets.values())
    return DatasetMetadata(
        pad_id=pad_id,
        ignore_label_id=ignore_label_id,
        blank_identifier_id=blank_identifier_id,
        vocab_size=vocab_size,
        seq_len=seq_len,
        num_puzzle_identifiers=num_puzzle_identifiers,
        total_groups=total_groups,
        mean_puzzle_examples=(total_examples / total_puzzles) if total_puzzles else 0.0,
        total_puzzles=total_puzzles,
        sets=list(sets.keys()),
    )
