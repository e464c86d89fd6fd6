"""The training loop: data, sharded state, jitted steps, evaluation, logging, checkpoints, resume.

:func:`train` runs one experiment config (see :mod:`trm_jax.configs`) in a run directory::

    WORKDIR/config.json        the resolved config (dataset fields and total_steps filled in)
    WORKDIR/checkpoints/<step> orbax checkpoints: train state + loader position + config
    WORKDIR/metrics.csv        every logged scalar (plus WORKDIR/tensorboard/ with tensorboardX)
    WORKDIR/curves.png         training and evaluation curves, drawn at the end of the run
    WORKDIR/eval/step_<N>/     ARC submission.json (ARC datasets)
    WORKDIR/data/              generated dataset (configs with a data.generate spec)

The host never waits on the step it just dispatched: the metrics of step t are fetched after
step t+1 is dispatched. SIGINT/SIGTERM finish the current step (multi-process: a step every
process agrees on), save a checkpoint and return;
``resume=True`` restores the newest checkpoint (state and loader position) and continues with
exactly the batches and state an uninterrupted run would have had.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import ml_collections
import numpy as np

from trm_jax import configs as configs_lib
from trm_jax.config import TRMConfig
from trm_jax.data.format import DatasetFormatError
from trm_jax.data.loader import PuzzleLoader
from trm_jax.train import parallel
from trm_jax.train.checkpoint import Checkpointer
from trm_jax.train.metrics_log import MetricsWriter, format_scalars, plot_curves
from trm_jax.train.state import OptimConfig, TrainState, create_train_state

CONFIG_NAME = "config.json"
CHECKPOINT_DIR = "checkpoints"
_RATE_KEYS = ("accuracy", "exact_accuracy", "q_halt_accuracy", "steps")
_LOSS_KEYS = ("loss", "lm_loss", "q_halt_loss", "q_continue_loss")


class TrainingError(RuntimeError):
    """The run cannot go on (non-finite loss)."""


class RunDirError(ValueError):
    """The run directory or the data it points to cannot be used as asked."""


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns: where it stopped and the last metrics."""

    step: int
    total_steps: int
    interrupted: bool  # stopped by a signal or ``stop_at`` before total_steps
    train_metrics: dict[str, float]
    eval_metrics: dict[str, float]
    workdir: str
    # The signal the run stopped for (multi-process: the largest any process got, on every
    # process); None when it finished or stopped at ``stop_at``.
    stop_signal: signal.Signals | None = None


# ------------------------------------------------------------------------------------ data


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
        raise RunDirError(f"{path} exists but holds no train/dataset.json (not a dataset): remove it, "
                          f"or point {where} elsewhere")
    if not built and not gen.kind:
        raise RunDirError(f"dataset directory {path} does not exist (build it with `trm-jax data ...`)")
    if not built and jax.process_index() == 0:
        _generate_dataset(gen, path)
    if gen.kind and jax.process_count() > 1:  # every process reaches it, whatever it saw on disk
        from jax.experimental import multihost_utils  # noqa: PLC0415
        multihost_utils.sync_global_devices(f"trm_jax generated dataset {path}")
        if not (path / "train" / "dataset.json").is_file():
            raise RunDirError(f"{path}: process 0 generated the dataset but process "
                              f"{jax.process_index()} cannot see it (is WORKDIR on a shared filesystem?)")
    return path


def _generate_dataset(gen: ml_collections.ConfigDict, out: Path) -> None:
    print(f"generating a {gen.kind} dataset into {out} "
          f"({gen.num_train} train / {gen.num_test} test puzzles, {gen.num_aug} augmentations)", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".csv-") as csv_dir:
        if gen.kind == "sudoku":
            from trm_jax.data.generate_sudoku import generate_sudoku_csvs  # noqa: PLC0415
            from trm_jax.data.sudoku import build_sudoku_dataset  # noqa: PLC0415
            generate_sudoku_csvs(csv_dir, gen.num_train, gen.num_test, gen.seed, gen.workers)
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
        loader = PuzzleLoader(path, "train", config.optim.global_batch_size, seed=config.train.seed,
                              process_index=jax.process_index(), process_count=jax.process_count())
    except (FileNotFoundError, DatasetFormatError) as err:
        raise RunDirError(f"dataset {path}: {err}") from None
    if loader.batches_per_epoch(0) == 0:
        raise RunDirError(
            f"dataset {path}: an epoch has fewer examples than config.optim.global_batch_size="
            f"{config.optim.global_batch_size}; use a smaller batch (--config.optim.global_batch_size=N)")
    return loader


def make_eval_loader(config: ml_collections.ConfigDict, path: Path) -> PuzzleLoader:
    size = config.train.eval_batch_size or config.optim.global_batch_size
    try:
        return PuzzleLoader(path, "test", size, test_mode=True, process_index=jax.process_index(),
                            process_count=jax.process_count())
    except (FileNotFoundError, DatasetFormatError) as err:
        raise RunDirError(f"dataset {path}: {err}") from None


# ------------------------------------------------------------------------ configs of a run


def resolve_configs(config: ml_collections.ConfigDict, loader: PuzzleLoader
                    ) -> tuple[ml_collections.ConfigDict, TRMConfig, OptimConfig]:
    """The config with dataset fields and total_steps filled in, and the model/optim configs."""
    total = config.optim.total_steps or loader.total_steps(config.train.epochs)
    if total < 1:
        raise RunDirError(f"total steps = {total}: config.train.epochs={config.train.epochs} is too few "
                          f"for this dataset and batch size")
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


def _write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the run directory is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------ state & restore


def abstract_state(model_config: TRMConfig, optim_config: OptimConfig, mesh: jax.sharding.Mesh) -> TrainState:
    """Shapes, dtypes and (jit-layout) shardings of the train state, without computing it."""
    create = functools.partial(create_train_state, model_config, optim_config,
                               batch_size=optim_config.global_batch_size)
    shapes = jax.eval_shape(create, jax.random.key(0))
    shardings = parallel.state_shardings(shapes, mesh)
    return jax.tree_util.tree_map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                                  shapes, shardings)


def restore_checkpoint(checkpointer: Checkpointer, model_config: TRMConfig, optim_config: OptimConfig,
                       mesh: jax.sharding.Mesh, step: int | None = None) -> tuple[TrainState, dict]:
    """``(state, extras)`` of a checkpoint, laid out on ``mesh``.

    Raises :class:`~trm_jax.train.checkpoint.CheckpointMismatchError` when the checkpoint was
    written for another architecture.
    """
    return checkpointer.restore(step, target=abstract_state(model_config, optim_config, mesh))


def _restore_loader(loader: PuzzleLoader, extras: dict, checkpointer: Checkpointer, step: int) -> None:
    """Puts ``loader`` at the position saved in a checkpoint's extras."""
    position = extras.get("loader")
    if not isinstance(position, dict) or not {"epoch", "batch"} <= position.keys():
        raise checkpointer.damaged(step, "its extras hold no loader position")
    try:
        loader.restore(position)
    except ValueError as err:  # a seed, split or batch size other than the run's
        raise RunDirError(f"checkpoint step {step} in {checkpointer.directory} was saved by another data "
                          f"setup: {err}") from None


def _check_resume_step(ckpt_dir: Path, on_disk: list[int], step: int, resume: bool) -> None:
    """``train(step=...)``: the step exists and nothing newer would meet later saves."""
    if not resume:
        raise RunDirError(f"step={step} (--step) needs resume (--resume)")
    if step not in on_disk:
        raise RunDirError(f"no checkpoint for step {step} in {ckpt_dir} "
                          f"(steps there: {', '.join(map(str, on_disk)) or 'none'})")
    newer = [s for s in on_disk if s > step]
    if newer:
        moves = "; ".join(f"mv {ckpt_dir / str(s)} {ckpt_dir / str(s)}.aside" for s in newer)
        raise RunDirError(f"cannot resume from step {step}: {ckpt_dir} also holds newer step(s) "
                          f"{', '.join(map(str, newer))}, which later saves would meet; move them aside "
                          f"({moves}) and resume again")


class _StopSignal:
    """SIGINT/SIGTERM as a flag, and the step at which every process stops for it.

    A handler (main thread only) records the signal; :meth:`poll` is called after every step
    and says when to stop. One process stops at the step it was signalled. Several processes
    must stop at the same step, or one enters the checkpoint barrier while another waits in the
    next step's all-reduce and the job hangs; they all get SIGTERM, but at different steps. So
    every ``check_every`` steps each process dispatches a tiny all-reduce (max) of its signal
    number, behind the step it just dispatched, and reads the result one step later, once that
    step's metrics are read too: no extra host stall, and every process sees the same value at
    the same step. A stop is thus agreed one step after a check that saw a signal; all
    processes stop with the largest signal number any of them got (SIGTERM over SIGINT).
    """

    def __init__(self, mesh: jax.sharding.Mesh, check_every: int) -> None:
        self.received: signal.Signals | None = None  # this process's first signal
        self._previous: dict[int, Any] = {}
        self._multi = jax.process_count() > 1
        self._mesh, self._check_every = mesh, check_every
        self._pending: jax.Array | None = None  # the reduction dispatched at the last check
        self._flags: dict[int, jax.Array] = {}  # this process's shards of the flag array, by value
        self._reduce: Callable | None = None

    def __enter__(self) -> "_StopSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now (other processes are left waiting)
        if self.received is None:
            self.received = signal.Signals(signum)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def poll(self, step: int) -> signal.Signals | None:
        """The signal to stop for after ``step`` (the same on every process), or None.

        Every process calls it after dispatching each step, with the same ``step``.
        """
        if not self._multi:
            return self.received
        if self._pending is not None:
            agreed = int(np.asarray(self._pending.addressable_data(0)))
            self._pending = None
            if agreed:
                return signal.Signals(agreed)
        if step % self._check_every == 0:
            self._pending = self._all_max(int(self.received or 0))
        return None

    def _all_max(self, value: int) -> jax.Array:
        if self._reduce is None:
            from jax.sharding import NamedSharding, PartitionSpec  # noqa: PLC0415
            self._reduce = jax.jit(jax.numpy.max, out_shardings=NamedSharding(self._mesh, PartitionSpec()))
        if value not in self._flags:  # one transfer per distinct value, not one per check
            local = np.full((len(self._mesh.local_devices),), value, np.int32)
            self._flags[value] = jax.make_array_from_process_local_data(
                parallel.batch_sharding(self._mesh), local, (self._mesh.size,))
        return self._reduce(self._flags[value])


# ------------------------------------------------------------------------------ stepping


class _Stepper:
    """The jitted (or pmapped) train/eval steps and conversions to/from the canonical layout."""

    def __init__(self, mode: str, model_config: TRMConfig, optim_config: OptimConfig,
                 mesh: jax.sharding.Mesh, state: TrainState, eval_num_steps: int | None):
        if mode not in ("jit", "pmap"):
            raise RunDirError(f"config.train.parallel={mode!r}: expected 'jit' or 'pmap'")
        self.mode, self.mesh = mode, mesh
        self._shardings = parallel.state_shardings(state, mesh)
        self._eval = parallel.jit_eval_step(model_config, mesh, state, use_ema=optim_config.ema,
                                            num_steps=eval_num_steps)
        if mode == "jit":
            self._train = parallel.jit_train_step(model_config, optim_config, mesh, state)
        else:
            self._devices = jax.local_device_count()
            self._train = parallel.pmap_train_step(model_config, optim_config)

    def to_running(self, state: TrainState) -> TrainState:
        return state if self.mode == "jit" else parallel.replicate_for_pmap(state)

    def to_canonical(self, state: TrainState) -> TrainState:
        if self.mode == "jit":
            return state
        return jax.device_put(parallel.unreplicate_from_pmap(state), self._shardings)

    def train(self, state: TrainState, batch: dict[str, np.ndarray]) -> tuple[TrainState, dict]:
        if self.mode == "jit":
            return self._train(state, parallel.shard_batch(batch, self.mesh))
        state, metrics = self._train(state, parallel.split_batch_for_pmap(batch, self._devices))
        return state, jax.tree_util.tree_map(lambda x: x[0], metrics)

    def eval(self, state: TrainState, batch: dict[str, np.ndarray]) -> tuple[dict, dict]:
        return self._eval(state, parallel.shard_batch(batch, self.mesh))


def _host_rows(x: Any) -> np.ndarray:
    """All rows of a batch-sharded global array (or this process's numpy slice) on the host."""
    if jax.process_count() == 1:
        return np.asarray(jax.device_get(x))
    from jax.experimental import multihost_utils  # noqa: PLC0415
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def run_evaluation(config: ml_collections.ConfigDict, state: TrainState, eval_fn: Callable,
                   loader: PuzzleLoader, *, step: int, out_dir: Path | None = None,
                   arc_evaluator: Any = None) -> dict[str, float]:
    """Metrics over the test split (``eval_max_batches`` batches, 0 = all), EMA weights.

    Means are over the non-padding examples; with an ARC evaluator also pass@k, and the
    submission is written to ``out_dir/eval/step_<step>/``.
    """
    sums: dict[str, float] = {}
    if arc_evaluator is not None:
        arc_evaluator.begin_eval()
    for index, batch in enumerate(loader):
        if config.train.eval_max_batches and index >= config.train.eval_max_batches:
            break
        predictions, metrics = eval_fn(state, batch)
        for key, value in jax.device_get(metrics).items():
            sums[key] = sums.get(key, 0.0) + float(value)
        if arc_evaluator is not None:
            arc_evaluator.update(_host_rows(batch["inputs"]), _host_rows(predictions["preds"]),
                                 _host_rows(predictions["q_halt_logits"]),
                                 _host_rows(batch["puzzle_identifiers"]))
    count = max(sums.get("count", 0.0), 1.0)
    result = {"count": sums.get("count", 0.0)}
    for key, value in sums.items():
        if key in _RATE_KEYS or key in ("lm_loss", "q_halt_loss", "q_continue_loss"):
            result[key] = value / count
    if arc_evaluator is not None:
        result.update(arc_evaluator.result())
        if out_dir is not None and jax.process_index() == 0:
            arc_evaluator.write_submission(str(out_dir / "eval" / f"step_{step}"))
    return result


def make_arc_evaluator(config: ml_collections.ConfigDict, path: Path) -> Any:
    if config.data.evaluator == "":
        return None
    if config.data.evaluator != "arc":
        raise RunDirError(f"config.data.evaluator={config.data.evaluator!r}: expected 'arc' or ''")
    from trm_jax.data.arc_eval import ArcEvaluator  # noqa: PLC0415
    return ArcEvaluator.from_dataset_dir(str(path), aggregate_across_evals=False)


class _TrainWindow:
    """Metric sums over the steps since the last log line."""

    def __init__(self, global_batch: int):
        self.global_batch = global_batch
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = 0
        self.start = time.perf_counter()

    def add(self, metrics: dict[str, float]) -> None:
        self.steps += 1
        for key, value in metrics.items():
            self.sums[key] = self.sums.get(key, 0.0) + value

    def means(self) -> dict[str, float]:
        count = max(self.sums.get("count", 0.0), 1.0)
        out: dict[str, float] = {}
        for key, value in self.sums.items():
            if key in _RATE_KEYS:
                out[key] = value / count
            elif key in _LOSS_KEYS:
                scale = self.global_batch if key != "loss" else 1
                out[key] = value / self.steps / scale
            elif key == "lr":
                out[key] = value / self.steps
        elapsed = time.perf_counter() - self.start
        out["steps_per_s"] = self.steps / elapsed if elapsed > 0 else 0.0
        return out


# ----------------------------------------------------------------------------------- train


def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike, resume: bool = False,
          *, stop_at: int | None = None, step: int | None = None,
          on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train ``config`` in ``workdir`` (see the module docstring); returns where it stopped.

    ``resume``: continue from the newest checkpoint in ``workdir`` (a fresh start when there is
    none). Without it, a ``workdir`` that already holds checkpoints is an error (nothing is
    overwritten). ``stop_at``: stop (with a checkpoint) once this step is reached, as a signal
    would; the schedule still spans the full run. ``step`` (with ``resume``): continue from that
    checkpoint step instead of the newest; refused while newer steps are in the directory (later
    saves would meet them): move those aside first.

    The whole config is checked (:func:`~trm_jax.configs.validate_config`) before any data is
    generated or any file is written. A damaged checkpoint raises
    :class:`~trm_jax.train.checkpoint.CheckpointDamagedError` before anything is written.

    ``on_step(step)`` is called on the host after each step is dispatched (``step`` counts the
    steps done, from 1), while the device computes it: a hook for custom logging or for
    delivering a signal at a given step in tests. It runs on every process; blocking there on
    device results stalls the pipeline.

    SIGINT/SIGTERM stop the run with a checkpoint: single-process at the step it was signalled,
    multi-process at a step all processes agree on (``config.train.stop_check_every``); the
    result's ``stop_signal`` says which signal.
    """
    if config.train.distributed:
        parallel.initialize_distributed()
    configs_lib.validate_config(config)
    workdir = Path(workdir)
    primary = jax.process_index() == 0
    ckpt_dir = workdir / CHECKPOINT_DIR
    on_disk = sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit()) if ckpt_dir.is_dir() else []
    if not resume and on_disk:
        raise RunDirError(f"{workdir} already holds checkpoints: pass --resume to continue that run, "
                          f"or use another --workdir")
    if step is not None:
        _check_resume_step(ckpt_dir, on_disk, step, resume)

    data_path = prepare_dataset(config, workdir)
    loader = make_train_loader(config, data_path)
    resolved, model_config, optim_config = resolve_configs(config, loader)
    eval_loader = make_eval_loader(config, data_path)
    arc_evaluator = make_arc_evaluator(config, data_path)
    mesh = parallel.make_mesh()

    checkpointer = Checkpointer(ckpt_dir, max_to_keep=config.train.max_to_keep,
                                async_save=config.train.async_checkpoint)
    try:
        start = (step if step is not None else checkpointer.latest_step()) if resume else None
        if start is not None:
            state, extras = restore_checkpoint(checkpointer, model_config, optim_config, mesh, start)
            _restore_loader(loader, extras, checkpointer, start)
            print(f"resumed {workdir} at step {start}/{optim_config.total_steps}", flush=True)
        else:
            start = 0
            state = parallel.create_sharded_train_state(model_config, optim_config,
                                                        jax.random.key(config.train.seed), mesh)
        if primary:
            _write_json_atomic(workdir / CONFIG_NAME, configs_lib.config_to_dict(resolved))
        return _run(resolved, model_config, optim_config, workdir, mesh, state, start, loader, eval_loader,
                    arc_evaluator, checkpointer, stop_at, on_step)
    finally:
        checkpointer.close()


def _run(config: ml_collections.ConfigDict, model_config: TRMConfig, optim_config: OptimConfig,
         workdir: Path, mesh: jax.sharding.Mesh, state: TrainState, start: int, loader: PuzzleLoader,
         eval_loader: PuzzleLoader, arc_evaluator: Any, checkpointer: Checkpointer,
         stop_at: int | None, on_step: Callable[[int], None] | None) -> TrainResult:
    from tqdm.auto import tqdm  # noqa: PLC0415

    primary = jax.process_index() == 0
    total = optim_config.total_steps
    eval_every = eval_every_steps(config, total)
    stepper = _Stepper(config.train.parallel, model_config, optim_config, mesh, state,
                       config.train.eval_num_steps or None)
    writer = MetricsWriter(workdir, tensorboard=config.train.tensorboard, enabled=primary)
    window = _TrainWindow(optim_config.global_batch_size)
    bar = tqdm(total=total, initial=start, disable=not (primary and config.train.progress_bar),
               dynamic_ncols=True, unit="step", leave=True)
    log = bar.write if not bar.disable else functools.partial(print, flush=True)
    if primary:
        log(f"training {model_config.hidden_size}-wide TRM for {total} steps "
            f"(batch {optim_config.global_batch_size}, {mesh.size} device(s), evaluation every {eval_every} steps)")

    saved_steps = set(checkpointer.all_steps())

    def save(step: int, state: TrainState) -> None:
        extras = {"loader": loader.state(), "config": configs_lib.config_to_dict(config),
                  "model_config": model_config.to_dict(), "step": step}
        if step not in saved_steps:  # an evaluation and a signal may both ask at one step
            saved_steps.add(step)
            checkpointer.save(step, stepper.to_canonical(state), extras, force=True)

    def evaluate(step: int, state: TrainState) -> dict[str, float]:
        result = run_evaluation(config, stepper.to_canonical(state), stepper.eval, eval_loader, step=step,
                                out_dir=workdir, arc_evaluator=arc_evaluator)
        writer.write(step, result, prefix="eval/")
        if primary:
            log(f"eval step {step}: {format_scalars(result)}")
        return result

    def consume(step: int, metrics: Any) -> dict[str, float]:
        values = {key: float(value) for key, value in jax.device_get(metrics).items()}  # raw sums
        if not math.isfinite(values["loss"]):
            last = checkpointer.latest_step()
            raise TrainingError(f"loss is {values['loss']} at step {step}: stopping the run "
                                f"(last checkpoint: {'none' if last is None else f'step {last}'})")
        window.add(values)
        if step % config.train.log_every == 0 or step == total:
            means = window.means()
            writer.write(step, means, prefix="train/")
            if primary:
                log(f"step {step}/{total}: {format_scalars(means)}")
            window.reset()
            last_train.clear()
            last_train.update(means)
        if values["count"] > 0:
            postfix["acc"] = f"{values['accuracy'] / values['count']:.3f}"
        postfix["loss"] = f"{values['loss']:.4f}"
        bar.set_postfix(postfix, refresh=False)
        return values

    postfix: dict[str, str] = {"loss": "-", "acc": "-", "steps/s": "-"}
    last_train: dict[str, float] = {}
    last_eval: dict[str, float] = {}
    interrupted = False
    stop_signal: signal.Signals | None = None
    step = start
    state = stepper.to_running(state)
    batches: Iterator = iter(loader)
    pending: tuple[int, Any] | None = None
    bar_start, bar_step = time.perf_counter(), start
    try:
        with _StopSignal(mesh, config.train.stop_check_every) as stop:
            while step < total:
                state, metrics = stepper.train(state, next(batches))
                step += 1
                if on_step is not None:
                    on_step(step)
                if pending is not None:  # the previous step's metrics, while this one runs
                    consume(*pending)
                pending = (step, metrics)
                stop_signal = stop.poll(step)
                bar.update(1)
                if step - bar_step >= 10:
                    now = time.perf_counter()
                    postfix["steps/s"] = f"{(step - bar_step) / (now - bar_start):.2f}"
                    bar.set_postfix(postfix, refresh=False)
                    bar_start, bar_step = now, step

                at_eval = step % eval_every == 0 or step == total
                if at_eval or stop_signal is not None or step == stop_at:
                    consume(*pending)
                    pending = None
                if at_eval and (step == total or step // eval_every > config.train.min_eval_interval):
                    last_eval = evaluate(step, state)
                    if config.train.checkpoint_every_eval or step == total:
                        save(step, state)
                elif step == total:
                    save(step, state)
                if step < total and (stop_signal is not None or step == stop_at):
                    save(step, state)
                    checkpointer.wait_until_finished()
                    interrupted = True
                    if primary:
                        reason = f"{stop_signal.name} received" if stop_signal else f"stop_at={stop_at} reached"
                        log(f"{reason}: saved a checkpoint at step {step}/{total} in "
                            f"{checkpointer.directory}; continue with --resume")
                    break
            if pending is not None:
                consume(*pending)
        checkpointer.wait_until_finished()
    finally:
        bar.close()
        writer.close()
    if primary:
        path = plot_curves(workdir)
        if path is not None:
            print(f"training curves: {path}", flush=True)
    return TrainResult(step=step, total_steps=total, interrupted=interrupted, train_metrics=last_train,
                       eval_metrics=last_eval, workdir=str(workdir),
                       stop_signal=stop_signal if interrupted else None)
