"""PNG rendering of Sudoku and maze puzzles, predictions and targets (matplotlib).

Inputs are dataset token sequences or grids, as found in the .npy files and loader batches
(Sudoku: digit + 1 with blank 1; maze: "# SGo" -> 1..5; label value -100 counts as unknown).
Each ``render_*`` function returns a ``matplotlib.figure.Figure`` made without pyplot, so no
backend is selected or changed (inline plots in a notebook keep working; show one there with
``display(fig)``); :func:`save_png` writes any figure atomically. ARC rendering lives in
``trm_jax/data/arc_render.py``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from trm_jax.fileio import atomic_write_with

GIVEN_COLOR = "black"
FILLED_COLOR = "#1f5fbf"
WRONG_FILL = "#f4b6b6"
MAZE_COLORS = {0: "#ffffff", 1: "#202020", 2: "#f5f5f5", 3: "#2ca02c", 4: "#d62728", 5: "#1f77b4"}


def save_png(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` as PNG (temp file then rename); a pyplot figure is closed."""
    try:
        return atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight"))
    finally:
        if fig.canvas.manager is not None:  # made by pyplot, which keeps it until closed
            import matplotlib.pyplot as plt  # noqa: PLC0415 - already imported by whoever made it

            plt.close(fig)


def _sudoku_digits(tokens: np.ndarray | None) -> np.ndarray | None:
    if tokens is None:
        return None
    t = np.asarray(tokens).astype(np.int64).reshape(-1)
    if t.shape[0] != 81:
        raise ValueError(f"a Sudoku needs 81 tokens, got {t.shape[0]}")
    return np.where((t >= 2) & (t <= 10), t - 1, 0).reshape(9, 9)


def _draw_sudoku(ax: Axes, puzzle: np.ndarray, shown: np.ndarray | None, target: np.ndarray | None, title: str) -> None:
    ax.set_xlim(0, 9)
    ax.set_ylim(9, 0)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    for r in range(9):
        for c in range(9):
            given = puzzle[r, c]
            if given:
                ax.text(
                    c + 0.5,
                    r + 0.55,
                    str(given),
                    ha="center",
                    va="center",
                    fontsize=13,
                    fontweight="bold",
                    color=GIVEN_COLOR,
                )
                continue
            if shown is None or not shown[r, c]:
                continue
            wrong = target is not None and target[r, c] and shown[r, c] != target[r, c]
            if wrong:
                ax.add_patch(Rectangle((c, r), 1, 1, color=WRONG_FILL, zorder=0))
            ax.text(
                c + 0.5,
                r + 0.55,
                str(shown[r, c]),
                ha="center",
                va="center",
                fontsize=13,
                color="#b00000" if wrong else FILLED_COLOR,
            )
    for i in range(10):
        lw = 2.0 if i % 3 == 0 else 0.5
        ax.plot([0, 9], [i, i], color="black", lw=lw)
        ax.plot([i, i], [0, 9], color="black", lw=lw)


def render_sudoku(
    puzzle: np.ndarray, prediction: np.ndarray | None = None, target: np.ndarray | None = None, title: str | None = None
) -> Figure:
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
    fig = Figure(figsize=(3.2 * len(panels), 3.4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
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
    lut = np.array([to_rgb(MAZE_COLORS[i]) for i in range(6)])
    return lut[grid]


def render_maze(
    maze: np.ndarray, prediction: np.ndarray | None = None, target: np.ndarray | None = None, title: str | None = None
) -> Figure:
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
    fig = Figure(figsize=(3.4 * len(panels), 3.6))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
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
