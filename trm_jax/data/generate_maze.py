"""Offline maze generator: square mazes with a long, unique shortest S->G path, official CSV layout.

A maze: walls everywhere, then a random spanning tree (iterative depth-first "recursive
backtracker") is carved on the lattice of odd coordinates, then a fraction ``loop_fraction``
of the remaining lattice walls is knocked down to create loops (several routes). S and G are
lattice cells whose shortest path has more than ``path_longer_than`` moves (Maze-Hard used
> 110) and is the *only* shortest path, so the label is unambiguous. The answer is the
question with every cell strictly between S and G on that path marked ``o``. The ``rating``
column holds the shortest-path length (moves).

Maze ``i`` depends only on (seed, split, i). Characters: ``#`` wall, `` `` open, ``S``, ``G``, ``o``.
"""

from __future__ import annotations

import os
import random
from collections import deque
from pathlib import Path

import numpy as np

from trm_jax.data.csv_source import CsvRow, write_puzzle_csv
from trm_jax.data.progress import progress

_MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))


def _carve(side: int, loop_fraction: float, rnd: random.Random) -> list[list[bool]]:
    """open[r][c]: a perfect maze on the odd lattice plus random extra openings."""
    open_ = [[False] * side for _ in range(side)]
    cells = [(r, c) for r in range(1, side - 1, 2) for c in range(1, side - 1, 2)]
    start = rnd.choice(cells)
    open_[start[0]][start[1]] = True
    stack = [start]
    while stack:
        r, c = stack[-1]
        nbrs = [
            (r + 2 * dr, c + 2 * dc, r + dr, c + dc)
            for dr, dc in _MOVES
            if 0 < r + 2 * dr < side - 1 and 0 < c + 2 * dc < side - 1 and not open_[r + 2 * dr][c + 2 * dc]
        ]
        if not nbrs:
            stack.pop()
            continue
        nr, nc, wr, wc = rnd.choice(nbrs)
        open_[wr][wc] = open_[nr][nc] = True
        stack.append((nr, nc))
    walls = [
        (r, c)
        for r in range(1, side - 1)
        for c in range(1, side - 1)
        if not open_[r][c]
        and (r % 2) != (c % 2)
        and ((r % 2 == 1 and c + 1 < side - 1) or (c % 2 == 1 and r + 1 < side - 1))
    ]
    for r, c in rnd.sample(walls, int(round(loop_fraction * len(walls)))):
        open_[r][c] = True
    return open_


def shortest_paths(open_: list[list[bool]] | np.ndarray, start: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """BFS from ``start``: (distance [-1 = unreachable], number of shortest paths capped at 2)."""
    grid = np.asarray(open_, dtype=bool)
    h, w = grid.shape
    dist = np.full((h, w), -1, np.int64)
    ways = np.zeros((h, w), np.int64)
    dist[start] = 0
    ways[start] = 1
    q = deque([start])
    while q:
        r, c = q.popleft()
        for dr, dc in _MOVES:
            nr, nc = r + dr, c + dc
            if 0 <= nr < h and 0 <= nc < w and grid[nr, nc]:
                if dist[nr, nc] < 0:
                    dist[nr, nc] = dist[r, c] + 1
                    ways[nr, nc] = ways[r, c]
                    q.append((nr, nc))
                elif dist[nr, nc] == dist[r, c] + 1:
                    ways[nr, nc] = min(2, ways[nr, nc] + ways[r, c])
    return dist, ways


def _trace_back(dist: np.ndarray, goal: tuple[int, int]) -> list[tuple[int, int]]:
    path = [goal]
    r, c = goal
    while dist[r, c] > 0:
        for dr, dc in _MOVES:
            nr, nc = r + dr, c + dc
            if 0 <= nr < dist.shape[0] and 0 <= nc < dist.shape[1] and dist[nr, nc] == dist[r, c] - 1:
                r, c = nr, nc
                break
        path.append((r, c))
    return path[::-1]


def generate_maze(
    rnd: random.Random, side: int = 30, path_longer_than: int = 110, loop_fraction: float = 0.05, max_tries: int = 200
) -> tuple[str, str, int]:
    """(question, answer, path length) of one maze; raises RuntimeError if the length is unreachable."""
    for _ in range(max_tries):
        open_ = _carve(side, loop_fraction, rnd)
        cells = [(r, c) for r in range(1, side - 1, 2) for c in range(1, side - 1, 2)]
        for _ in range(8):
            s = rnd.choice(cells)
            dist, ways = shortest_paths(open_, s)
            far = [g for g in cells if dist[g] > path_longer_than and ways[g] == 1]
            if not far:
                continue
            g = rnd.choice(far)
            q = [["#" if not open_[r][c] else " " for c in range(side)] for r in range(side)]
            q[s[0]][s[1]] = "S"
            q[g[0]][g[1]] = "G"
            a = [row[:] for row in q]
            for r, c in _trace_back(dist, g)[1:-1]:
                a[r][c] = "o"
            return "".join(map("".join, q)), "".join(map("".join, a)), int(dist[g])
    raise RuntimeError(
        f"no {side}x{side} maze with a unique shortest path longer than {path_longer_than} "
        f"found in {max_tries} tries (lower path_longer_than or loop_fraction)"
    )


def _rng_for(seed: int, split: str, index: int) -> random.Random:
    split_id = {"train": 0, "test": 1}.get(split, 2)
    state = np.random.SeedSequence([seed, 1000 + split_id, index]).generate_state(2)
    return random.Random(int(state[0]) << 32 | int(state[1]))


def generate_maze_rows(
    n: int, seed: int, split: str, side: int = 30, path_longer_than: int = 110, loop_fraction: float = 0.05
) -> list[CsvRow]:
    """``n`` CSV rows for ``split``, deterministic given (seed, split) and the parameters."""
    source = f"trm_jax-generated-seed{seed}"
    rows = []
    with progress(range(n), total=n, desc=f"generating {split} mazes", unit="maze") as indices:
        for i in indices:
            q, a, length = generate_maze(_rng_for(seed, split, i), side, path_longer_than, loop_fraction)
            rows.append(CsvRow(source, q, a, length))
    return rows


def generate_maze_csvs(
    out_dir: str | os.PathLike,
    num_train: int = 1000,
    num_test: int = 1000,
    seed: int = 0,
    side: int = 30,
    path_longer_than: int = 110,
    loop_fraction: float = 0.05,
) -> Path:
    """Write ``out_dir/train.csv`` and ``out_dir/test.csv``; test mazes equal to a train maze are dropped."""
    out = Path(out_dir)
    train = generate_maze_rows(num_train, seed, "train", side, path_longer_than, loop_fraction)
    test = generate_maze_rows(num_test, seed, "test", side, path_longer_than, loop_fraction)
    seen = {r.question for r in train}
    test = [r for r in test if r.question not in seen]
    write_puzzle_csv(out / "train.csv", train)
    write_puzzle_csv(out / "test.csv", test)
    return out
