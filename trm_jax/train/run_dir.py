"""A run directory and what a run reads before it starts: dataset, loaders, configs, restore.

Layout of ``WORKDIR``::

    WORKDIR/config.json        the resolved config (dataset fields, total_steps, absolute paths)
    WORKDIR/checkpoints/<step> orbax checkpoints: train state + loader position + config
    WORKDIR/metrics.csv        every logged scalar (plus WORKDIR/tensorboard/ with tensorboardX)
    WORKDIR/curves.png         training and evaluation curves, drawn at the end of the run
    WORKDIR/eval/step_<N>/     ARC submission.json (ARC datasets)
    WORKDIR/data/              generated dataset (configs with a data.generate spec)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import jax
import ml_collections

from trm_jax import configs as configs_lib
from trm_jax.config import TRMConfig
from trm_jax.data.format import DatasetFormatError
from trm_jax.data.loader import PuzzleLoader
from trm_jax.train import parallel
from trm_jax.train.checkpoint import Checkpointer
from trm_jax.train.state import OptimConfig, TrainState

CONFIG_NAME = "config.json"
CHECKPOINT_DIR = "checkpoints"


class RunDirError(ValueError):
    """The run directory or the data it points to cannot be used as asked."""


def dataset_dir(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> Path:
    """The dataset directory of a run: ``config.data.dataset_dir`` or ``WORKDIR/data``."""
    if config.data.dataset_dir:
        return Path(config.data.dataset_dir)
    return Path(workdir) / "data"


def prepare_dataset(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> Path:
    """The run's dataset directory, generated first when the config has a generator spec.

    Multi-host: process 0 generates (WORKDIR must be on a filesystem all hosts share) while the
    others wait for it at a barrier. A directory that exists but is not a dataset is an error
    (:class:`RunDirError`), raised before anything is generated.
    """
    path = dataset_dir(config, workdir)
    gen = config.data.generate
    exists = path.exists()  # before `built`: a dataset generated meanwhile appears complete (renamed)
    built = (path / "train" / "dataset.json").is_file()
    if not built and exists:
        where = "config.data.dataset_dir" if config.data.dataset_dir else "--workdir"
        raise RunDirError(
            f"{path} exists but holds no train/dataset.json (not a dataset): remove it, or point {where} elsewhere"
        )
    if not built and not gen.kind:
        raise RunDirError(f"dataset directory {path} does not exist (build it with `trm-jax data ...`)")
    if not built and jax.process_index() == 0:
        _generate_dataset(gen, path)
    if gen.kind and jax.process_count() > 1:  # every process reaches it, whatever it saw on disk
        from jax.experimental import multihost_utils  # noqa: PLC0415

        multihost_utils.sync_global_devices(f"trm_jax generated dataset {path}")
        if not (path / "train" / "dataset.json").is_file():
            raise RunDirError(
                f"{path}: process 0 generated the dataset but process "
                f"{jax.process_index()} cannot see it (is WORKDIR on a shared filesystem?)"
            )
    return path


def _generate_dataset(gen: ml_collections.ConfigDict, out: Path) -> None:
    print(
        f"generating a {gen.kind} dataset into {out} "
        f"({gen.num_train} train / {gen.num_test} test puzzles, {gen.num_aug} augmentations)",
        flush=True,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".csv-") as csv_dir:
        if gen.kind == "sudoku":
            from trm_jax.data.generate_sudoku import generate_sudoku_csvs  # noqa: PLC0415
            from trm_jax.data.sudoku import build_sudoku_dataset  # noqa: PLC0415

            generate_sudoku_csvs(csv_dir, gen.num_train, gen.num_test, gen.seed, gen.workers, gen.blanks)
            build_sudoku_dataset(out, source_dir=csv_dir, hub_repo=None, num_aug=gen.num_aug, seed=gen.seed)
        elif gen.kind == "maze":
            from trm_jax.data.generate_maze import generate_maze_csvs  # noqa: PLC0415
            from trm_jax.data.maze import build_maze_dataset  # noqa: PLC0415

            generate_maze_csvs(csv_dir, gen.num_train, gen.num_test, gen.seed)
            build_maze_dataset(out, source_dir=csv_dir, hub_repo=None, aug=gen.num_aug > 0, seed=gen.seed)
        else:
            raise RunDirError(f"config.data.generate.kind={gen.kind!r}: expected 'sudoku', 'maze' or ''")


def make_train_loader(config: ml_collections.ConfigDict, path: Path) -> PuzzleLoader:
    """This process's training loader; fails clearly when an epoch cannot fill one batch."""
    try:
        loader = PuzzleLoader(
            path,
            "train",
            config.optim.global_batch_size,
            seed=config.train.seed,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
    except (FileNotFoundError, DatasetFormatError) as err:
        raise RunDirError(f"dataset {path}: {err}") from None
    if loader.batches_per_epoch(0) == 0:
        raise RunDirError(
            f"dataset {path}: an epoch has fewer examples than config.optim.global_batch_size="
            f"{config.optim.global_batch_size}; use a smaller batch (--config.optim.global_batch_size=N)"
        )
    return loader


def make_eval_loader(config: ml_collections.ConfigDict, path: Path) -> PuzzleLoader:
    """This process's test-split loader (``eval_batch_size``, else the training batch), padded."""
    size = config.train.eval_batch_size or config.optim.global_batch_size
    try:
        return PuzzleLoader(
            path, "test", size, test_mode=True, process_index=jax.process_index(), process_count=jax.process_count()
        )
    except (FileNotFoundError, DatasetFormatError) as err:
        raise RunDirError(f"dataset {path}: {err}") from None


# ------------------------------------------------------------------------ configs of a run


def resolve_configs(
    config: ml_collections.ConfigDict, loader: PuzzleLoader
) -> tuple[ml_collections.ConfigDict, TRMConfig, OptimConfig]:
    """The config with dataset fields and total_steps filled in, and the model/optim configs."""
    total = config.optim.total_steps or loader.total_steps(config.train.epochs)
    if total < 1:
        raise RunDirError(
            f"total steps = {total}: config.train.epochs={config.train.epochs} is too few "
            f"for this dataset and batch size"
        )
    model_config = configs_lib.model_config(config, loader.metadata)
    optim_config = configs_lib.optim_config(config, total)
    resolved = ml_collections.ConfigDict(configs_lib.config_to_dict(config))
    for name in configs_lib.DATASET_FIELDS:
        resolved.model[name] = getattr(model_config, name)
    resolved.model.batch_size = model_config.batch_size
    resolved.optim.total_steps = optim_config.total_steps
    return resolved, model_config, optim_config


def eval_every_steps(config: ml_collections.ConfigDict, total_steps: int) -> int:
    """Steps between evaluations (eval_every_steps, else eval_interval epochs' worth)."""
    if config.train.eval_every_steps > 0:
        return int(config.train.eval_every_steps)
    if config.train.eval_interval <= 0:
        return total_steps
    return max(1, total_steps * config.train.eval_interval // max(config.train.epochs, 1))


def restore_checkpoint(
    checkpointer: Checkpointer,
    model_config: TRMConfig,
    optim_config: OptimConfig,
    mesh: jax.sharding.Mesh,
    step: int | None = None,
) -> tuple[TrainState, dict]:
    """``(state, extras)`` of a checkpoint, laid out on ``mesh``.

    Raises :class:`~trm_jax.train.checkpoint.CheckpointMismatchError` when the checkpoint was
    written for another architecture.
    """
    return checkpointer.restore(step, target=parallel.abstract_state(model_config, optim_config, mesh))


def restore_loader(loader: PuzzleLoader, extras: dict, checkpointer: Checkpointer, step: int) -> None:
    """Puts ``loader`` at the position saved in a checkpoint's extras."""
    position = extras.get("loader")
    if not isinstance(position, dict) or not {"epoch", "batch"} <= position.keys():
        raise checkpointer.damaged(step, "its extras hold no loader position")
    try:
        loader.restore(position)
    except ValueError as err:  # a seed, split or batch size other than the run's
        raise RunDirError(
            f"checkpoint step {step} in {checkpointer.directory} was saved by another data setup: {err}"
        ) from None


def check_resume_step(ckpt_dir: Path, on_disk: list[int], step: int, resume: bool) -> None:
    """``train(step=...)``: the step exists and nothing newer would meet later saves."""
    if not resume:
        raise RunDirError(f"step={step} (--step) needs resume (--resume)")
    if step not in on_disk:
        raise RunDirError(
            f"no checkpoint for step {step} in {ckpt_dir} (steps there: {', '.join(map(str, on_disk)) or 'none'})"
        )
    newer = [s for s in on_disk if s > step]
    if newer:
        moves = "; ".join(f"mv {ckpt_dir / str(s)} {ckpt_dir / str(s)}.aside" for s in newer)
        raise RunDirError(
            f"cannot resume from step {step}: {ckpt_dir} also holds newer step(s) "
            f"{', '.join(map(str, newer))}, which later saves would meet; move them aside "
            f"({moves}) and resume again"
        )
