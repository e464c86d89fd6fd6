"""Weights & Biases logging of a run's scalars (``train.wandb_project``; ``pip install 'trm-jax[wandb]'``).

With ``train.wandb_project`` set, process 0 logs every scalar that goes to ``metrics.csv`` to one
W&B run, against the training step (the metric ``step``, the x-axis of every other metric); the
run's resolved config (``config.json``) is the W&B run config. The W&B run id is kept in
``WORKDIR/wandb_id.txt``: a run that continues from a checkpoint continues that W&B run
(``resume="allow"``), a run that starts at step 0 starts a new one. As in the CSV, the steps
logged after the last checkpoint are logged again after a resume (W&B's own ``_step`` counts on).
W&B keeps its local files under ``WANDB_DIR`` when set, else in the run directory
(``WORKDIR/wandb/``; offline runs, ``WANDB_MODE=offline``, are uploaded from there with ``wandb
sync``). ``wandb`` is imported only when a project is set.
"""

from __future__ import annotations

import os
import secrets
import string
from pathlib import Path
from typing import Any, Mapping

import ml_collections

from trm_jax.config import ConfigError
from trm_jax.fileio import atomic_write

ID_NAME = "wandb_id.txt"
INSTALL = "pip install 'trm-jax[wandb]'"
STEP_METRIC = "step"
_ID_CHARS = string.ascii_lowercase + string.digits


def check_available(config: ml_collections.ConfigDict) -> None:
    """Raises :class:`ConfigError` (one line) when ``train.wandb_project`` is set and wandb does not import."""
    project = config.train.wandb_project
    if not project:
        return
    try:
        import wandb  # noqa: F401, PLC0415 - optional
    except ImportError as err:
        reason = " ".join(str(err).split())
        raise ConfigError(
            f"config.train.wandb_project={project!r} needs the wandb package, which does not "
            f"import ({reason}): {INSTALL}, or leave train.wandb_project empty"
        ) from None


def run_id(workdir: Path, continuing: bool) -> str:
    """The W&B run id of the run in ``workdir``: the stored one when ``continuing`` (from a
    checkpoint) and one is stored, else a new one, stored in ``WORKDIR/wandb_id.txt``."""
    path = workdir / ID_NAME
    if continuing and path.is_file():
        stored = path.read_text().strip()
        if stored:
            return stored
    new = "".join(secrets.choice(_ID_CHARS) for _ in range(8))
    with atomic_write(path) as f:
        f.write(new + "\n")
    return new


class WandbRun:
    """The W&B run a training run's scalars go to (:meth:`start` creates or resumes it)."""

    def __init__(self, run: Any):
        self._run = run

    @classmethod
    def start(cls, config: ml_collections.ConfigDict, workdir: Path, *, continuing: bool) -> WandbRun:
        """Starts (or, when ``continuing`` from a checkpoint, resumes) the W&B run of ``workdir``,
        with the resolved ``config`` as its W&B config."""
        import wandb  # noqa: PLC0415 - optional, checked by check_available

        from trm_jax.configs import config_to_dict  # noqa: PLC0415

        train = config.train
        kwargs: dict[str, Any] = dict(
            project=train.wandb_project,
            entity=train.wandb_entity or None,
            name=train.wandb_run_name or workdir.resolve().name,
            id=run_id(workdir, continuing),
            resume="allow",
            config=config_to_dict(config),
        )
        if not os.environ.get("WANDB_DIR"):
            kwargs["dir"] = str(workdir)
        run = wandb.init(**kwargs)
        run.define_metric(STEP_METRIC)
        run.define_metric("*", step_metric=STEP_METRIC)
        return cls(run)

    @property
    def description(self) -> str:
        """Where the run's W&B data goes, for the run's start-up lines."""
        run = self._run
        if getattr(run, "disabled", False):
            return "W&B disabled (WANDB_MODE=disabled)"
        where = f"offline, {Path(run.dir).parent}" if getattr(run, "offline", False) else run.url
        return f"W&B run {run.project}/{run.id}" + (f" ({where})" if where else "")

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        """Records ``scalars`` (full tags) at training step ``step``."""
        self._run.log({STEP_METRIC: int(step), **{tag: float(v) for tag, v in scalars.items()}})

    def finish(self, failed: bool = False) -> None:
        """Ends the run; ``failed`` marks it failed in W&B (exit code 1)."""
        self._run.finish(exit_code=1 if failed else 0)
