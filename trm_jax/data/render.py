"""PNG rendering of Sudoku and maze puzzles, predictions and targets (matplotlib, Agg backend).

Inputs are dataset token sequences or grids, as found in the .npy files and loader batches
(Sudoku: digit + 1 with blank 1; maze: "# SGo" -> 1..5; label value -100 counts as unknown).
Each ``render_*`` function returns a matplotlib Figure; :func:`save_png` writes any figure
atomically. ARC rendering lives in ``trm_jax/data/arc_render.py``.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

GIVEN_COLOR = "black"
FILLED_COLOR = "#1f5fbf"
WRONG_FILL = "#f4b6b6"
MAZE_COLORS = {0: "#ffffff", 1: "#202020", 2: "#f5f5f5", 3: "#2ca02c", 4: "#d62728", 5: "#1f77b4"}


def save_png(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` as PNG (temp file then rename) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path


def _sudoku_digits(tokens: np.ndarray | None) -> np.ndarray | None:
    if tokens is None:
        return None
    t = np.asarray(tokens).astype(np.int64).reshape(-1)
    if t.shape[0] != 81:
        raise ValueError(f"a Sudoku needs 81 tokens, got {t.shape[0]}")
    return np.where((t >= 2) & (t <= 10), t - 1, 0).reshape(9, 9)


def _draw_sudoku(ax: plt.Axes, puzzle: np.ndarray, shown: np.ndarray | None, target: np.ndarray | None,
                 title: str) -> None:
    ax.set_xlim(0, 9)
    ax.set_ylim(9, 0)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    for r in range(9):
        for c in range(9):
            given = puzzle[r, c]
            if given:
                ax.text(c + 0.5, r + 0.55, str(given), ha="center", va="center", fontsize=13,
                        fontweight="bold", color=GIVEN_COLOR)
                continue
            if shown is None or not shown[r, c]:
                continue
            wrong = target is not None and target[r, c] and shown[r, c] != target[r, c]
            if wrong:
                ax.add_patch(Rectangle((c, r), 1, 1, color=WRONG_FILL, zorder=0))
            ax.text(c + 0.5, r + 0.55, str(shown[r, c]), ha="center", va="center", fontsize=13,
                    color="#b00000" if wrong else FILLED_COLOR)
    for i in range(10):
        lw = 2.0 if i % 3 == 0 else 0.5
        ax.plot([0, 9], [i, i], color="black", lw=lw)
        ax.plot([i, i], [0, 9], color="black", lw=lw)


def render_sudoku(puzzle: np.ndarray, prediction: np.ndarray | None = None, target: np.ndarray | None = None,
                  title: str | None = None) -> Figure:
    """Panels: the puzzle, the prediction (wrong cells in red when ``target`` is given), the target.

    Givens are bold black; filled-in digits blue.
    """
    q = _sudoku_digits(puzzle)
    pred, tgt = _sudoku_digits(prediction), _sudoku_digits(target)
    panels = [("puzzle", None)]
    if pred is not None:
        n_wrong = int(np.sum((q == 0) & (tgt > 0) & (pred != tgt))) if tgt is not None else None
        panels.append(("prediction" + (f" ({n_wrong} wrong)" if n_wrong is not None else ""), pred))
    if tgt is not None:
        panels.append(("target", tgt))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    axes = np.atleast_1d(axes)
    for ax, (name, grid) in zip(axes, panels):
        _draw_sudoku(ax, q, grid, tgt if grid is pred else None, name)
    if title:
        fig.suptitle(title)
    return fig


def _maze_grid(tokens: np.ndarray | None) -> np.ndarray | None:
    if tokens is None:
        return None
    t = np.asarray(tokens).astype(np.int64)
    if t.ndim == 1:
        side = math.isqrt(t.shape[0])
        if side * side != t.shape[0]:
            raise ValueError(f"maze token count {t.shape[0]} is not a square")
        t = t.reshape(side, side)
    return np.where((t >= 0) & (t <= 5), t, 0)


def _maze_rgb(grid: np.ndarray) -> np.ndarray:
    lut = np.array([matplotlib.colors.to_rgb(MAZE_COLORS[i]) for i in range(6)])
    return lut[grid]


def render_maze(maze: np.ndarray, prediction: np.ndarray | None = None, target: np.ndarray | None = None,
                title: str | None = None) -> Figure:
    """Panels: the maze (walls dark, S green, G red), the predicted path, the target path.

    In the prediction panel, path cells that are not on the target path and target path cells
    that were missed are outlined in red.
    """
    m = _maze_grid(maze)
    pred, tgt = _maze_grid(prediction), _maze_grid(target)
    panels = [("maze", m)]
    if pred is not None:
        panels.append(("prediction", pred))
    if tgt is not None:
        panels.append(("target", tgt))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.6))
    axes = np.atleast_1d(axes)
    for ax, (name, grid) in zip(axes, panels):
        ax.imshow(_maze_rgb(grid), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if grid is pred and tgt is not None:
            wrong = (pred == 5) != (tgt == 5)
            for r, c in zip(*np.nonzero(wrong)):
                ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red", lw=1.2))
            name += f" ({int(wrong.sum())} wrong)"
        ax.set_title(name, fontsize=10)
    if title:
        fig.suptitle(title)
    return fig
