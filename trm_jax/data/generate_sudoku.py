"""Offline Sudoku generator: unique-solution 9x9 puzzles that need search, in the official CSV layout.

Each puzzle: a random complete grid (randomised search), then clues are removed in a random
order as long as the solution stays unique; the result is kept only if naked + hidden singles
alone cannot solve it (so it needs search). The ``rating`` column is the solver's backtrack
count: the number of dead ends met by a deterministic depth-first search (most-constrained
cell first, digits ascending, singles propagation at every node) that explores the whole tree
to prove uniqueness. A puzzle needs search exactly when this count is >= 1.

Puzzle ``i`` of a split depends only on (seed, split, i), so the output does not depend on the
number of worker processes.

Timing: ``python -m trm_jax.data.build gen-sudoku OUT --num-train 1000 --num-test 1000 --workers 2``
took 217 s wall-clock (124 s CPU, about 62 ms per puzzle) on the 2-core machine while other
jobs were sharing it. ``gen-maze`` with the same counts took 23 s (one process).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
from pathlib import Path

import numpy as np

from trm_jax.data.csv_source import CsvRow, write_puzzle_csv
from trm_jax.data.progress import progress

ALL = 0x1FF  # candidates 1..9 as bits 0..8


def _make_units() -> tuple[list[list[int]], list[list[int]]]:
    units = [[r * 9 + c for c in range(9)] for r in range(9)]
    units += [[r * 9 + c for r in range(9)] for c in range(9)]
    units += [[(br * 3 + r) * 9 + bc * 3 + c for r in range(3) for c in range(3)] for br in range(3) for bc in range(3)]
    peers = [sorted({p for u in units if i in u for p in u} - {i}) for i in range(81)]
    return units, peers


UNITS, PEERS = _make_units()


def _propagate(c: list[int], queue: list[int]) -> bool:
    """Apply naked and hidden singles in place until nothing changes; False on a contradiction.

    ``queue`` holds cells that became single-valued and whose value is not yet removed from peers.
    """
    while True:
        while queue:
            i = queue.pop()
            m = c[i]
            for p in PEERS[i]:
                pm = c[p]
                if pm & m:
                    pm &= ~m
                    if not pm:
                        return False
                    c[p] = pm
                    if not pm & (pm - 1):
                        queue.append(p)
        for u in UNITS:
            once = twice = 0
            for i in u:
                m = c[i]
                twice |= once & m
                once |= m
            if once != ALL:
                return False
            only = once & ~twice
            if only:
                for i in u:
                    m = c[i]
                    h = m & only
                    if h and h != m:
                        if h & (h - 1):
                            return False  # two digits that both can only go here
                        c[i] = h
                        queue.append(i)
        if not queue:
            return True


def _candidates(puzzle: list[int]) -> tuple[list[int], bool]:
    """Candidate masks after singles propagation from a puzzle (0 = blank); (cands, consistent)."""
    c = [ALL if d == 0 else 1 << (d - 1) for d in puzzle]
    ok = _propagate(c, [i for i, d in enumerate(puzzle) if d])
    return c, ok


def _is_solved(c: list[int]) -> bool:
    return all(not m & (m - 1) for m in c)


def solvable_by_singles(puzzle: list[int]) -> bool:
    """True when naked + hidden singles alone fill every cell of ``puzzle`` (81 digits, 0 = blank)."""
    c, ok = _candidates(puzzle)
    return ok and _is_solved(c)


class _Search:
    def __init__(self, limit: int, rnd: random.Random | None = None) -> None:
        self.limit = limit
        self.rnd = rnd
        self.count = 0
        self.dead_ends = 0
        self.first: list[int] | None = None

    def run(self, c: list[int]) -> None:
        best, best_n = -1, 10
        for i, m in enumerate(c):
            if m & (m - 1):
                n = m.bit_count()
                if n < best_n:
                    best, best_n = i, n
                    if n == 2:
                        break
        if best < 0:
            self.count += 1
            if self.first is None:
                self.first = [m.bit_length() for m in c]
            return
        m = c[best]
        bits = [1 << k for k in range(9) if m >> k & 1]
        if self.rnd is not None:
            self.rnd.shuffle(bits)
        for b in bits:
            c2 = c[:]
            c2[best] = b
            if _propagate(c2, [best]):
                self.run(c2)
                if self.count >= self.limit:
                    return
            else:
                self.dead_ends += 1


def count_solutions(puzzle: list[int], limit: int = 2) -> tuple[int, int, list[int] | None]:
    """(number of solutions up to ``limit``, dead ends met, first solution) of an 81-digit puzzle."""
    c, ok = _candidates(puzzle)
    s = _Search(limit)
    if ok:
        s.run(c)
    return s.count, s.dead_ends, s.first


def _random_solution(rnd: random.Random) -> list[int]:
    s = _Search(limit=1, rnd=rnd)
    s.run([ALL] * 81)
    assert s.first is not None
    return s.first


def generate_puzzle(rnd: random.Random, max_tries: int = 1000) -> tuple[list[int], list[int], int]:
    """(puzzle, solution, rating): a unique-solution puzzle that singles cannot solve."""
    for _ in range(max_tries):
        solution = _random_solution(rnd)
        puzzle = solution[:]
        order = list(range(81))
        rnd.shuffle(order)
        for i in order:
            saved = puzzle[i]
            puzzle[i] = 0
            if solvable_by_singles(puzzle):
                continue  # still unique
            if count_solutions(puzzle, 2)[0] != 1:
                puzzle[i] = saved
        if not solvable_by_singles(puzzle):
            n, dead_ends, _ = count_solutions(puzzle, 2)
            assert n == 1
            return puzzle, solution, dead_ends
    raise RuntimeError("could not generate a puzzle needing search")


def generate_puzzle_with_blanks(
    rnd: random.Random, blanks: int, max_tries: int = 1000
) -> tuple[list[int], list[int], int]:
    """(puzzle, solution, rating): a unique-solution puzzle with exactly ``blanks`` empty cells.

    The difficulty knob of the generator: clues are removed from a random complete grid in a
    random order, skipping any whose removal would allow a second solution, until ``blanks``
    cells are empty. Fewer blanks is easier; a puzzle with few blanks may need no search
    (``rating`` 0), one near the minimal-puzzle range (55-64 blanks) usually does.
    """
    if not 0 <= blanks <= 64:
        raise ValueError(
            f"blanks={blanks}: expected 0..64 (no 9x9 Sudoku with fewer than 17 clues has a unique solution)"
        )
    for _ in range(max_tries):
        solution = _random_solution(rnd)
        puzzle = solution[:]
        order = list(range(81))
        rnd.shuffle(order)
        removed = 0
        for i in order:
            if removed == blanks:
                break
            saved = puzzle[i]
            puzzle[i] = 0
            if solvable_by_singles(puzzle) or count_solutions(puzzle, 2)[0] == 1:
                removed += 1
            else:
                puzzle[i] = saved
        if removed == blanks:
            return puzzle, solution, count_solutions(puzzle, 2)[1]
    raise RuntimeError(f"could not generate a unique puzzle with {blanks} blanks")


def _rng_for(seed: int, split: str, index: int) -> random.Random:
    split_id = {"train": 0, "test": 1}.get(split, 2)
    state = np.random.SeedSequence([seed, split_id, index]).generate_state(2)
    return random.Random(int(state[0]) << 32 | int(state[1]))


def _generate_row(args: tuple[int, str, int, int]) -> tuple[str, str, int]:
    seed, split, index, blanks = args
    rnd = _rng_for(seed, split, index)
    if blanks:
        puzzle, solution, rating = generate_puzzle_with_blanks(rnd, blanks)
    else:
        puzzle, solution, rating = generate_puzzle(rnd)
    q = "".join(str(d) if d else "." for d in puzzle)
    a = "".join(str(d) for d in solution)
    return q, a, rating


def generate_sudoku_rows(n: int, seed: int, split: str, workers: int = 1, blanks: int = 0) -> list[CsvRow]:
    """``n`` CSV rows for ``split``, deterministic given (seed, split, blanks), whatever ``workers`` is.

    ``blanks`` 0: minimal puzzles that need search (:func:`generate_puzzle`); otherwise puzzles
    with exactly that many blanks (:func:`generate_puzzle_with_blanks`).
    """
    tasks = [(seed, split, i, blanks) for i in range(n)]
    desc = f"generating {split} Sudoku puzzles"
    if workers > 1 and n > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            rows = pool.imap(_generate_row, tasks, chunksize=max(1, n // (workers * 8)))
            with progress(rows, total=n, desc=desc, unit="puzzle") as rows:
                results = list(rows)
    else:
        with progress(tasks, total=n, desc=desc, unit="puzzle") as tasks:
            results = [_generate_row(t) for t in tasks]
    source = f"trm_jax-generated-seed{seed}"
    return [CsvRow(source, q, a, r) for q, a, r in results]


def generate_sudoku_csvs(
    out_dir: str | os.PathLike,
    num_train: int = 1000,
    num_test: int = 1000,
    seed: int = 0,
    workers: int = 1,
    blanks: int = 0,
) -> Path:
    """Write ``out_dir/train.csv`` and ``out_dir/test.csv``; test puzzles equal to a train puzzle are dropped.

    ``blanks``: see :func:`generate_sudoku_rows`.
    """
    out = Path(out_dir)
    train = generate_sudoku_rows(num_train, seed, "train", workers, blanks)
    test = generate_sudoku_rows(num_test, seed, "test", workers, blanks)
    seen = {r.question for r in train}
    test = [r for r in test if r.question not in seen]
    write_puzzle_csv(out / "train.csv", train)
    write_puzzle_csv(out / "test.csv", test)
    return out
