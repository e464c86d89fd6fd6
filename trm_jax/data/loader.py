"""Batches from a dataset directory, sampled as the reference's PuzzleDataset does.

Training (``test_mode=False``), per epoch and per set (in ``metadata.sets`` order): the groups
are shuffled; for each group in that order one of its puzzles is drawn uniformly; that
puzzle's examples, drawn without replacement, fill the global batch (a puzzle with more
examples than the batch has room left contributes only as many as fit; the next batch starts
with the next group); the last incomplete batch is dropped. Training iteration is endless
(epoch after epoch). Unlike the reference (which draws the examples from numpy's global
random state), every draw comes from a generator seeded by (seed, epoch, set index), so the
batches are a function of the seed and position alone: :meth:`PuzzleLoader.state` /
:meth:`PuzzleLoader.restore` resume exactly.

Test (``test_mode=True``): every example of every set in order, ``global_batch_size`` at a
time; the last batch is padded with ``pad_id`` inputs, ``-100`` labels and the blank
puzzle identifier. One pass per ``for`` loop.

Batches are dicts of int32 numpy arrays ``inputs [B, seq_len]``, ``labels [B, seq_len]``
(``ignore_label_id`` mapped to -100), ``puzzle_identifiers [B]``, where B is the local batch:
process ``process_index`` of ``process_count`` gets the contiguous slice
``[process_index * B, (process_index + 1) * B)`` of the global batch.

Speed (measured on the shared 2-core CPU machine, one process, data from
``gen-sudoku --num-train 1000`` then ``sudoku --num-aug 100``, i.e. 1000 groups x 101 puzzles,
global batch 768): 2,034 training batches/s; Maze (1000 generated mazes x 8 dihedral
augmentations, seq 900): 257 batches/s. Command:
``python -m trm_jax.data.loader DATASET_DIR --batch 768 --batches 2000``.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from trm_jax.data.format import DatasetFormatError, DatasetMetadata, SplitArrays, load_split, read_metadata

# Labels the loss ignores (the reference's value): batches carry it for ignored cells and padding.
IGNORE_LABEL_ID = -100
Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class BatchInfo:
    """Where a batch comes from: set name, epoch, index in the epoch, non-padding global rows."""

    set_name: str
    epoch: int
    index: int
    effective_size: int


@dataclass(frozen=True)
class _PlannedBatch:
    set_name: str
    examples: np.ndarray  # [n <= global batch] example rows
    puzzles: np.ndarray  # [n] puzzle rows (for the puzzle identifiers)


def total_training_steps(epochs: int, metadata: DatasetMetadata, global_batch_size: int) -> int:
    """The reference's step budget: int(epochs * total_groups * mean_puzzle_examples / global_batch)."""
    return int(epochs * metadata.total_groups * metadata.mean_puzzle_examples / global_batch_size)


class PuzzleLoader:
    """Iterable of batches over one split of a dataset directory (see the module docstring)."""

    def __init__(
        self,
        dataset_dir: str | os.PathLike,
        split: str,
        global_batch_size: int,
        *,
        seed: int = 0,
        test_mode: bool | None = None,
        process_index: int = 0,
        process_count: int = 1,
        mmap: bool = True,
    ) -> None:
        if global_batch_size <= 0:
            raise ValueError(f"global_batch_size must be positive, got {global_batch_size}")
        if process_count <= 0 or not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} must be in [0, process_count={process_count})")
        if global_batch_size % process_count:
            raise ValueError(
                f"global_batch_size {global_batch_size} is not a multiple of process_count {process_count}"
            )
        self.dataset_dir = Path(dataset_dir)
        self.split = split
        self.global_batch_size = int(global_batch_size)
        self.local_batch_size = self.global_batch_size // process_count
        self.seed = int(seed)
        self.test_mode = (split == "test") if test_mode is None else bool(test_mode)
        self.process_index = process_index
        self.process_count = process_count
        split_dir = self.dataset_dir / split
        self.metadata: DatasetMetadata = read_metadata(split_dir)
        self.sets: dict[str, SplitArrays] = {
            name: load_split(split_dir, name, mmap=mmap, metadata=self.metadata) for name in self.metadata.sets
        }
        self._epoch = 0
        self._batch = 0
        self._plan: list[_PlannedBatch] | None = None
        self._plan_epoch = -1

    # -- metadata for the trainer
    @property
    def vocab_size(self) -> int:
        return self.metadata.vocab_size

    @property
    def seq_len(self) -> int:
        return self.metadata.seq_len

    @property
    def num_puzzle_identifiers(self) -> int:
        return self.metadata.num_puzzle_identifiers

    @property
    def total_groups(self) -> int:
        return self.metadata.total_groups

    @property
    def mean_puzzle_examples(self) -> float:
        return self.metadata.mean_puzzle_examples

    def total_steps(self, epochs: int) -> int:
        """:func:`total_training_steps` for this split and batch size."""
        return total_training_steps(epochs, self.metadata, self.global_batch_size)

    # -- position
    def state(self) -> dict[str, object]:
        """JSON-able position: the next batch is batch ``batch`` of epoch ``epoch``."""
        return {
            "epoch": self._epoch,
            "batch": self._batch,
            "seed": self.seed,
            "split": self.split,
            "global_batch_size": self.global_batch_size,
            "test_mode": self.test_mode,
        }

    def restore(self, state: dict[str, object]) -> None:
        """Continue from a position returned by :meth:`state` (same dataset, seed and batch size)."""
        for key in ("seed", "split", "global_batch_size", "test_mode"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"restore: state has {key}={state[key]!r}, this loader has {getattr(self, key)!r}")
        epoch, batch = int(state["epoch"]), int(state["batch"])  # type: ignore[arg-type]
        if epoch < 0 or batch < 0:
            raise ValueError(f"restore: negative position {state}")
        self._epoch, self._batch = epoch, batch

    # -- iteration
    def __iter__(self) -> Iterator[Batch]:
        for _, batch in self.iter_with_info():
            yield batch

    def iter_with_info(self) -> Iterator[tuple[BatchInfo, Batch]]:
        """Like iterating the loader, with a :class:`BatchInfo` alongside each batch."""
        while True:
            plan = self._epoch_plan(self._epoch)
            if not self.test_mode and not plan:
                raise DatasetFormatError(
                    f"{self.dataset_dir / self.split}: an epoch yields no full batch of {self.global_batch_size} "
                    "examples (dataset too small for this batch size)"
                )
            while self._batch < len(plan):
                planned = plan[self._batch]
                info = BatchInfo(planned.set_name, self._epoch, self._batch, int(planned.examples.shape[0]))
                batch = self._collate(planned)
                self._batch += 1
                yield info, batch
            self._epoch += 1
            self._batch = 0
            if self.test_mode:
                return

    def batches_per_epoch(self, epoch: int | None = None) -> int:
        """Number of (global) batches in an epoch (training: depends on the epoch's draws)."""
        return len(self._epoch_plan(self._epoch if epoch is None else epoch))

    # -- internals
    def _epoch_plan(self, epoch: int) -> list[_PlannedBatch]:
        if self._plan is None or self._plan_epoch != epoch:
            self._plan = self._test_plan() if self.test_mode else self._train_plan(epoch)
            self._plan_epoch = epoch
        return self._plan

    def _test_plan(self) -> list[_PlannedBatch]:
        plan = []
        for name, arrays in self.sets.items():
            n = arrays.num_examples
            puzzle_of_example = np.repeat(np.arange(arrays.num_puzzles), np.diff(arrays.puzzle_indices))
            for start in range(0, n, self.global_batch_size):
                ex = np.arange(start, min(n, start + self.global_batch_size))
                plan.append(_PlannedBatch(name, ex, puzzle_of_example[ex]))
        return plan

    def _train_plan(self, epoch: int) -> list[_PlannedBatch]:
        plan: list[_PlannedBatch] = []
        size = self.global_batch_size
        for set_index, (name, arrays) in enumerate(self.sets.items()):
            rng = np.random.default_rng([self.seed, epoch, set_index])
            gi, pi = arrays.group_indices, arrays.puzzle_indices
            order = rng.permutation(arrays.num_groups)
            puzzles = rng.integers(gi[order], gi[order + 1])  # one puzzle per group
            starts = pi[puzzles]
            sizes = pi[puzzles + 1] - starts
            if sizes.size and int(sizes.max()) == 1:  # one example per puzzle: plain reshape
                full = (puzzles.size // size) * size
                for b in range(0, full, size):
                    plan.append(_PlannedBatch(name, starts[b : b + size], puzzles[b : b + size]))
                continue
            ex_parts: list[np.ndarray] = []
            pz_parts: list[np.ndarray] = []
            fill = 0
            for p, s, k in zip(puzzles.tolist(), starts.tolist(), sizes.tolist()):
                take = min(k, size - fill)
                chosen = rng.permutation(k)[:take] if k > 1 else np.zeros(1, np.int64)
                ex_parts.append(s + chosen)
                pz_parts.append(np.full(take, p))
                fill += take
                if fill == size:
                    plan.append(_PlannedBatch(name, np.concatenate(ex_parts), np.concatenate(pz_parts)))
                    ex_parts, pz_parts, fill = [], [], 0
            # an incomplete last batch is dropped
        return plan

    def _collate(self, planned: _PlannedBatch) -> Batch:
        arrays = self.sets[planned.set_name]
        lo = self.process_index * self.local_batch_size
        ex = planned.examples[lo : lo + self.local_batch_size]
        pz = planned.puzzles[lo : lo + self.local_batch_size]
        inputs = np.asarray(arrays.inputs[ex], dtype=np.int32)
        labels = np.asarray(arrays.labels[ex], dtype=np.int32)
        ids = np.asarray(arrays.puzzle_identifiers[pz], dtype=np.int32)
        if self.metadata.ignore_label_id is not None:
            labels[labels == self.metadata.ignore_label_id] = IGNORE_LABEL_ID
        pad = self.local_batch_size - ex.shape[0]
        if pad:
            inputs = np.concatenate([inputs, np.full((pad, self.seq_len), self.metadata.pad_id, np.int32)])
            labels = np.concatenate([labels, np.full((pad, self.seq_len), IGNORE_LABEL_ID, np.int32)])
            ids = np.concatenate([ids, np.full(pad, self.metadata.blank_identifier_id, np.int32)])
        return {"inputs": inputs, "labels": labels, "puzzle_identifiers": ids}


def _benchmark(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Measure training batches/s of PuzzleLoader on a dataset directory.")
    p.add_argument("dataset_dir")
    p.add_argument("--split", default="train")
    p.add_argument("--batch", type=int, default=768)
    p.add_argument("--batches", type=int, default=1000)
    args = p.parse_args(argv)
    loader = PuzzleLoader(args.dataset_dir, args.split, args.batch, seed=0)
    it = iter(loader)
    next(it)
    t = time.perf_counter()
    for _ in range(args.batches):
        next(it)
    dt = time.perf_counter() - t
    print(
        f"{args.batches} batches of {args.batch} in {dt:.3f} s: {args.batches / dt:.1f} batches/s "
        f"(epochs seen: {loader.state()['epoch']})"
    )


if __name__ == "__main__":
    _benchmark()
