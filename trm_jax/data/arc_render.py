"""ARC grids as PNG: input, prediction and target side by side in the standard ARC palette."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from trm_jax.data.arc_augment import NUM_COLOURS, crop_canvas, locate_grid
from trm_jax.fileio import atomic_write_with

# The 10 colours of the ARC task viewer, indexed by colour 0..9.
ARC_PALETTE = (
    "#000000",  # 0 black
    "#0074D9",  # 1 blue
    "#FF4136",  # 2 red
    "#2ECC40",  # 3 green
    "#FFDC00",  # 4 yellow
    "#AAAAAA",  # 5 grey
    "#F012BE",  # 6 magenta
    "#FF851B",  # 7 orange
    "#7FDBFF",  # 8 azure
    "#870C25",  # 9 maroon
)
_BORDER_COLOUR = "#555555"


def _draw_grid(ax, grid: Optional[np.ndarray], title: str) -> None:
    from matplotlib.colors import ListedColormap

    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if grid is None or grid.size == 0:
        ax.text(0.5, 0.5, "(none)", ha="center", va="center", transform=ax.transAxes)
        return
    height, width = grid.shape
    ax.imshow(grid, cmap=ListedColormap(ARC_PALETTE), vmin=0, vmax=NUM_COLOURS - 1, interpolation="nearest")
    # Cell borders: lines on the half-integer boundaries between cells.
    ax.set_xticks(np.arange(-0.5, width, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, height, 1), minor=True)
    ax.grid(which="minor", color=_BORDER_COLOUR, linewidth=0.5)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel(f"{height}x{width}", fontsize=8)


def render_arc_panels(
    panels: Sequence[tuple[str, Optional[np.ndarray]]],
    path: str,
    title: Optional[str] = None,
    cell_inches: float = 0.18,
) -> str:
    """Draws colour grids (values 0..9) side by side and writes a PNG atomically.

    Args:
      panels: (caption, grid) pairs; a grid may be None or empty (drawn as "(none)").
      path: the PNG path (its directory is created).
      title: an optional figure title.
      cell_inches: size of one cell; a panel is at least 1.5 inches wide.
    Returns:
      ``path``.
    """
    from matplotlib.figure import Figure  # noqa: PLC0415 - matplotlib only when rendering

    grids = []
    for caption, grid in panels:
        if grid is not None:
            grid = np.asarray(grid)
            if grid.ndim != 2 or (grid.size and (grid.min() < 0 or grid.max() >= NUM_COLOURS)):
                raise ValueError(f"panel {caption!r}: expected a 2-D grid of colours 0..9, got shape {grid.shape}")
        grids.append((caption, grid))
    widths = [max(1.5, cell_inches * (g.shape[1] if g is not None and g.size else 5)) for _, g in grids]
    height = max([1.5] + [cell_inches * g.shape[0] for _, g in grids if g is not None and g.size]) + 0.8
    fig = Figure(figsize=(sum(widths) + 0.3 * len(grids), height))  # no pyplot: no backend
    axes = fig.subplots(1, len(grids), gridspec_kw={"width_ratios": widths}, squeeze=False)
    for ax, (caption, grid) in zip(axes[0], grids):
        _draw_grid(ax, grid, caption)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    return path


def render_arc_prediction(
    input_grid: np.ndarray,
    prediction: Optional[np.ndarray],
    target: Optional[np.ndarray],
    path: str,
    title: Optional[str] = None,
) -> str:
    """Writes a PNG with the input, the prediction and the target grid (colours 0..9)."""
    panels = [("input", input_grid), ("prediction", prediction), ("target", target)]
    if prediction is not None and target is not None:
        prediction, target = np.asarray(prediction), np.asarray(target)
        verdict = "correct" if prediction.shape == target.shape and np.array_equal(prediction, target) else "wrong"
        panels[1] = (f"prediction ({verdict})", prediction)
    return render_arc_panels(panels, path, title=title)


def render_arc_tokens(
    input_tokens: np.ndarray,
    pred_tokens: Optional[np.ndarray],
    label_tokens: Optional[np.ndarray],
    path: str,
    title: Optional[str] = None,
) -> str:
    """Like ``render_arc_prediction`` but from 900-token canvases.

    Input and label are located wherever they sit on the canvas (training examples are
    translated); the prediction is cropped as the evaluator does, anchored at the input's offset.
    """
    input_grid, (row, col) = locate_grid(input_tokens)
    prediction = None if pred_tokens is None else crop_canvas(pred_tokens, row, col)
    target = None if label_tokens is None else locate_grid(label_tokens)[0]
    return render_arc_prediction(input_grid, prediction, target, path, title=title)
