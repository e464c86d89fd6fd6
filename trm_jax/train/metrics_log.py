"""Metrics of a run: TensorBoard (tensorboardX, when installed), a CSV file, stdout, PNG curves, W&B.

Every scalar goes to ``WORKDIR/metrics.csv`` (long format ``step,tag,value``, appended across
resumed runs) so the curves can be plotted and read without TensorBoard; with tensorboardX
installed the same scalars also go to ``WORKDIR/tensorboard/``. After a resume, steps logged
after the last checkpoint appear twice in the CSV; readers keep the last value per
(tag, step). A run killed while writing a line leaves it half-written: the next run starts
on a new line, and readers skip lines that are not a whole row. With ``train.wandb_project``
set the same scalars also go to a Weights & Biases run (:mod:`trm_jax.train.wandb_log`).
"""

from __future__ import annotations

import csv
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from trm_jax.train.wandb_log import WandbRun

CSV_NAME = "metrics.csv"
PLOT_NAME = "curves.png"
TB_DIR = "tensorboard"


class MetricsWriter:
    """Writes scalars to CSV (always), TensorBoard (when tensorboardX imports) and ``wandb``.

    ``wandb``: a started :class:`~trm_jax.train.wandb_log.WandbRun` that gets every scalar too
    and is finished by :meth:`close` (None: no W&B logging).
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        tensorboard: bool = True,
        enabled: bool = True,
        wandb: WandbRun | None = None,
    ):
        self.workdir = Path(workdir)
        self.enabled = enabled  # False on non-zero processes of a multi-host run
        self.csv_path = self.workdir / CSV_NAME
        self._tb = None
        self._wandb = wandb if enabled else None
        if not enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        new = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
        cut_short = not new and not _ends_with_newline(self.csv_path)
        self._csv_file = open(self.csv_path, "a", newline="")
        self._csv = csv.writer(self._csv_file)
        if new:
            self._csv.writerow(["step", "tag", "value"])
        elif cut_short:  # the last run was killed mid-line
            self._csv_file.write("\r\n")
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter  # noqa: PLC0415 - optional
            except ImportError:
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(str(self.workdir / TB_DIR))

    @property
    def has_tensorboard(self) -> bool:
        return self._tb is not None

    def write(self, step: int, scalars: Mapping[str, float], prefix: str = "") -> None:
        """Record ``scalars`` (tags ``prefix + name``) at ``step``."""
        if not self.enabled:
            return
        for name, value in scalars.items():
            tag = prefix + name
            self._csv.writerow([int(step), tag, repr(float(value))])
            if self._tb is not None:
                self._tb.add_scalar(tag, float(value), int(step))
        self._csv_file.flush()
        if self._tb is not None:
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(step, {prefix + name: value for name, value in scalars.items()})

    def close(self) -> None:
        """Closes the files and finishes the W&B run (marked failed when called from a
        ``finally`` block that an exception passes through)."""
        if not self.enabled:
            return
        self._csv_file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish(failed=sys.exc_info()[0] is not None)


def format_scalars(scalars: Mapping[str, float]) -> str:
    """``name=value`` pairs for a stdout line, short names and 4 significant digits."""
    return " ".join(f"{k}={v:.4g}" for k, v in scalars.items())


def read_metrics(path: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Series per tag from a metrics CSV, sorted by step, the last value kept per step."""
    series: dict[str, dict[int, float]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                step, tag, value = int(row["step"]), row["tag"], float(row["value"])
            except (KeyError, TypeError, ValueError):  # a line cut short by a killed run
                continue
            series.setdefault(tag, {})[step] = value
    return {tag: sorted(values.items()) for tag, values in series.items()}


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def plot_curves(workdir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path | None:
    """One PNG with a panel per metric (train and eval on the same axes); None without data."""
    from matplotlib.figure import Figure  # noqa: PLC0415 - matplotlib only when plotting

    from trm_jax.data.render import save_png  # noqa: PLC0415

    workdir = Path(workdir)
    csv_path = workdir / CSV_NAME
    if not csv_path.exists():
        return None
    series = read_metrics(csv_path)
    names = [
        n
        for n in ("loss", "lm_loss", "accuracy", "exact_accuracy", "q_halt_accuracy", "steps")
        if f"train/{n}" in series or f"eval/{n}" in series
    ]
    names += sorted({t.split("/", 1)[1] for t in series if t.startswith("eval/ARC")})
    if not names:
        return None
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows))  # no pyplot: no backend, no notebook side effects
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, name in zip(axes.flat, names):
        for split, style in (("train", "-"), ("eval", "o-")):
            points = series.get(f"{split}/{name}")
            if points:
                ax.plot([s for s, _ in points], [v for _, v in points], style, label=split, ms=3)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    return save_png(fig, out or workdir / PLOT_NAME)
