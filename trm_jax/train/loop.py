"""The training loop: jitted steps, evaluation, logging, checkpoints, resume.

:func:`train` runs one experiment config (see :mod:`trm_jax.configs`) in a run directory (its
layout: :mod:`trm_jax.train.run_dir`). Each job lives in its own module: the run directory,
dataset and restore in :mod:`~trm_jax.train.run_dir`, the jit/pmap steps in
:mod:`~trm_jax.train.stepping`, evaluation in :mod:`~trm_jax.train.evaluation`, metric means in
:mod:`~trm_jax.train.metrics`, signals in :mod:`~trm_jax.train.preemption`.

The host only dispatches between log lines: a step's metrics are added on device to a window
that is read (and checked for a non-finite loss) at log, evaluation and stop steps only, so the
host runs ahead of the device. SIGINT/SIGTERM finish the current step (multi-process: a step
every process agrees on), save a checkpoint and return; ``resume=True`` restores the newest
checkpoint (state and loader position) and continues with exactly the batches and state an
uninterrupted run would have had.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import signal
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

import jax
import ml_collections

from trm_jax import configs as configs_lib
from trm_jax.config import TRMConfig
from trm_jax.data.loader import PuzzleLoader
from trm_jax.fileio import write_json_atomic
from trm_jax.signals import raise_if_interrupted, signals_interrupt
from trm_jax.train import memory_check, parallel, wandb_log
from trm_jax.train.attention_check import resolve_attention_impl
from trm_jax.train.checkpoint import Checkpointer
from trm_jax.train.depth_curve import DEPTH_JSON, DepthCurve, depth_curve, save_depth_curve
from trm_jax.train.evaluation import make_arc_evaluator, make_eval_fn, run_evaluation
from trm_jax.train.metrics import MetricWindow
from trm_jax.train.metrics_log import CSV_NAME, PLOT_NAME, TB_DIR, MetricsWriter, format_scalars, plot_curves
from trm_jax.train.preemption import StopSignal
from trm_jax.train.run_dir import (
    CHECKPOINT_DIR,
    CONFIG_NAME,
    RunDirError,
    check_resume_step,
    dataset_dir,
    eval_every_steps,
    make_eval_loader,
    make_train_loader,
    prepare_dataset,
    resolve_configs,
    restore_checkpoint,
    restore_loader,
)
from trm_jax.train.run_lock import RunLock
from trm_jax.train.state import OptimConfig, TrainState
from trm_jax.train.stepping import Stepper

__all__ = [
    "CHECKPOINT_DIR",
    "CONFIG_NAME",
    "RunDirError",
    "TrainResult",
    "TrainingError",
    "dataset_dir",
    "eval_every_steps",
    "make_arc_evaluator",
    "make_eval_loader",
    "make_train_loader",
    "prepare_dataset",
    "resolve_configs",
    "restore_checkpoint",
    "run_evaluation",
    "train",
]

# Entered around the host work of every step (dispatch, metric add, ``on_step``); tests swap in
# a transfer guard to check that nothing is read from the device there.
step_context: Callable[[], ContextManager] = contextlib.nullcontext


class TrainingError(RuntimeError):
    """The run cannot go on (non-finite loss)."""


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
    # The test-time depth curve of the finished run (``train.depth_curve_steps`` > 0).
    depth_curve: DepthCurve | None = None


def train(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    resume: bool = False,
    *,
    stop_at: int | None = None,
    step: int | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``config`` in ``workdir`` (see the module docstring); returns where it stopped.

    ``resume``: continue from the newest checkpoint in ``workdir`` (a fresh start when there is
    none). Without it, a ``workdir`` that already holds checkpoints is an error (nothing is
    overwritten). ``stop_at``: stop (with a checkpoint) once this step is reached, as a signal
    would; the schedule still spans the full run. ``step`` (with ``resume``): continue from that
    checkpoint step instead of the newest; refused while newer steps are in the directory (later
    saves would meet them): move those aside first.

    The whole config is checked (:func:`~trm_jax.configs.validate_config`, and that wandb
    imports when ``train.wandb_project`` is set) before any data is generated or any file is
    written. A damaged checkpoint raises
    :class:`~trm_jax.train.checkpoint.CheckpointDamagedError` before anything is written. A
    relative ``data.dataset_dir`` is stored absolute in ``config.json`` (resolved against the
    current directory of the first run), so a resume from elsewhere reads the same data.

    ``on_step(step)`` is called on the host after each step is dispatched (``step`` counts the
    steps done, from 1), while the device computes it: a hook for custom logging or for
    delivering a signal at a given step in tests. It runs on every process; blocking there on
    device results stalls the pipeline.

    SIGINT/SIGTERM stop the run with a checkpoint: single-process at the step it was signalled,
    multi-process at a step all processes agree on (``config.train.stop_check_every``); the
    result's ``stop_signal`` says which signal. Before the loop (data generation, compilation)
    they raise :class:`~trm_jax.signals.Interrupted`, after removing what was being
    written.

    One trainer per run directory: process 0 locks it (:mod:`trm_jax.train.run_lock`) before
    anything is written; a directory another live trainer holds raises
    :class:`~trm_jax.train.run_lock.RunLockedError`.
    """
    if config.train.distributed:
        parallel.initialize_distributed()
    configs_lib.validate_config(config)
    wandb_log.check_available(config)
    if config.data.dataset_dir and not Path(config.data.dataset_dir).is_absolute():
        config = ml_collections.ConfigDict(configs_lib.config_to_dict(config))
        config.data.dataset_dir = str(Path(config.data.dataset_dir).absolute())
    workdir = Path(workdir)
    ckpt_dir = workdir / CHECKPOINT_DIR
    on_disk = sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit()) if ckpt_dir.is_dir() else []
    if not resume and on_disk:
        raise RunDirError(
            f"{workdir} already holds checkpoints: pass --resume to continue that run, or use another --workdir"
        )
    if step is not None:
        check_resume_step(ckpt_dir, on_disk, step, resume)
    lock = RunLock(workdir) if jax.process_index() == 0 else None  # one writer: process 0 holds it
    with signals_interrupt(), lock if lock is not None else contextlib.nullcontext():
        return _prepare_and_run(config, workdir, resume, step, stop_at, on_step, lock)


def _prepare_and_run(
    config: ml_collections.ConfigDict,
    workdir: Path,
    resume: bool,
    step: int | None,
    stop_at: int | None,
    on_step: Callable[[int], None] | None,
    lock: RunLock | None,
) -> TrainResult:
    """Everything :func:`train` does once the run directory is locked: data, configs, memory
    check, state (fresh or restored), then the loop."""
    ckpt_dir = workdir / CHECKPOINT_DIR
    data_path = prepare_dataset(config, workdir)
    loader = make_train_loader(config, data_path)
    resolved, model_config, optim_config = resolve_configs(config, loader)
    impl, warning = resolve_attention_impl(model_config)
    model_config = model_config.replace(attention_impl=impl)
    if warning and jax.process_index() == 0:
        print(warning, flush=True)
    eval_loader = make_eval_loader(config, data_path)
    arc_evaluator = make_arc_evaluator(config, data_path)
    mesh = parallel.make_mesh()
    fitted = memory_check.fit_train_step(config, model_config, optim_config, mesh, memory_check.memory_budget(config))
    optim_config = fitted.optim_config
    if fitted.message and jax.process_index() == 0:
        print(fitted.message, flush=True)
    raise_if_interrupted()  # a signal swallowed during compilation (see trm_jax.signals): write nothing

    checkpointer = Checkpointer(
        ckpt_dir, max_to_keep=config.train.max_to_keep, async_save=config.train.async_checkpoint
    )
    try:
        start = (step if step is not None else checkpointer.latest_step()) if resume else None
        if start is not None:
            state, extras = restore_checkpoint(checkpointer, model_config, optim_config, mesh, start)
            restore_loader(loader, extras, checkpointer, start)
        else:
            start = 0
            state = parallel.create_sharded_train_state(
                model_config, optim_config, jax.random.key(config.train.seed), mesh
            )
        if jax.process_index() == 0:
            write_json_atomic(workdir / CONFIG_NAME, configs_lib.config_to_dict(resolved))
        stepper = Stepper(config.train.parallel, model_config, optim_config, mesh, state, compiled=fitted.compiled)
        return _run(
            resolved,
            model_config,
            optim_config,
            workdir,
            mesh,
            state,
            stepper,
            start,
            loader,
            eval_loader,
            arc_evaluator,
            checkpointer,
            stop_at,
            on_step,
            lock,
        )
    finally:
        checkpointer.close()


def _start_lines(
    model_config: TRMConfig,
    optim_config: OptimConfig,
    mesh: jax.sharding.Mesh,
    state: TrainState,
    workdir: Path,
    start: int,
    eval_every: int,
    checkpointer: Checkpointer,
    tensorboard: bool,
    wandb: str = "",
) -> list[str]:
    """What the run says before its first step: hardware, model, batch, where things go."""
    total = optim_config.total_steps
    params = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
    batch = optim_config.global_batch_size
    devices = f"{mesh.size} {mesh.devices.flat[0].platform.upper()} device(s)"
    if jax.process_count() > 1:
        devices += f" over {jax.process_count()} processes"
    if start >= total:
        head = f"run in {workdir} already finished at step {start}/{total}: nothing to train"
    else:
        resumed = f"resumed {workdir} at step {start}/{total}; " if start else ""
        chunks = f" in {optim_config.microbatches} microbatches" if optim_config.microbatches > 1 else ""
        head = (
            f"{resumed}training {model_config.hidden_size}-wide TRM ({params:,} parameters) to step {total} on "
            f"{devices}, batch {batch} ({batch // mesh.size} per device{chunks}), evaluation every "
            f"{eval_every} steps"
        )
    metrics = f"{workdir / CSV_NAME}" + (f" (+ {workdir / TB_DIR})" if tensorboard else "")
    metrics += f" (+ {wandb})" if wandb else ""
    return [head, f"checkpoints: {checkpointer.directory}; metrics: {metrics}; curves: {workdir / PLOT_NAME}"]


def _run(
    config: ml_collections.ConfigDict,
    model_config: TRMConfig,
    optim_config: OptimConfig,
    workdir: Path,
    mesh: jax.sharding.Mesh,
    state: TrainState,
    stepper: Stepper,
    start: int,
    loader: PuzzleLoader,
    eval_loader: PuzzleLoader,
    arc_evaluator: Any,
    checkpointer: Checkpointer,
    stop_at: int | None,
    on_step: Callable[[int], None] | None,
    lock: RunLock | None,
) -> TrainResult:
    from tqdm.auto import tqdm  # noqa: PLC0415

    primary = jax.process_index() == 0
    total = optim_config.total_steps
    eval_every = eval_every_steps(config, total)
    eval_fn = make_eval_fn(config, model_config, optim_config, mesh, state)
    wandb_run = (
        wandb_log.WandbRun.start(config, workdir, continuing=start > 0)
        if primary and config.train.wandb_project
        else None
    )
    writer = MetricsWriter(workdir, tensorboard=config.train.tensorboard, enabled=primary, wandb=wandb_run)
    window = MetricWindow(optim_config.global_batch_size)
    bar = tqdm(
        total=total,
        initial=start,
        disable=not (primary and config.train.progress_bar),
        dynamic_ncols=True,
        unit="step",
        leave=True,
    )
    log = bar.write if not bar.disable else functools.partial(print, flush=True)
    if primary:
        for line in _start_lines(
            model_config,
            optim_config,
            mesh,
            state,
            workdir,
            start,
            eval_every,
            checkpointer,
            writer.has_tensorboard,
            wandb_run.description if wandb_run is not None else "",
        ):
            log(line)
    saved_steps = set(checkpointer.all_steps())

    def save(step: int, state: TrainState) -> None:
        extras = {
            "loader": loader.state(),
            "config": configs_lib.config_to_dict(config),
            "model_config": model_config.to_dict(),
            "step": step,
        }
        if step not in saved_steps:  # an evaluation and a signal may both ask at one step
            saved_steps.add(step)
            checkpointer.save(step, stepper.to_canonical(state), extras, force=True)

    def read_window(step: int, log_it: bool) -> None:
        """Reads the metric window (the host's only device read between evaluations)."""
        means, nonfinite = window.read()
        if lock is not None:
            lock.heartbeat()
        if nonfinite is not None:
            last = checkpointer.latest_step()
            raise TrainingError(
                f"loss is {nonfinite[1]} at step {nonfinite[0]} (steps {window.first_step}-"
                f"{window.last_step} read at step {step}): stopping the run "
                f"(last checkpoint: {'none' if last is None else f'step {last}'})"
            )
        if log_it and means:
            writer.write(step, means, prefix="train/")
            if primary:
                log(f"step {step}/{total}: {format_scalars(means)}")
            last_train.clear()
            last_train.update(means)
            bar.set_postfix(loss=f"{means['loss']:.4f}", acc=f"{means.get('accuracy', 0.0):.3f}", refresh=False)
            window.reset()

    last_train: dict[str, float] = {}
    last_eval: dict[str, float] = {}
    interrupted = False
    stop_signal: signal.Signals | None = None
    step = start
    state = stepper.to_running(state)
    batches: Iterator = iter(loader)
    raise_if_interrupted()  # the loop's handlers take over: a swallowed signal must not be lost there
    try:
        with StopSignal(mesh, config.train.stop_check_every) as stop:
            while step < total:
                with step_context():
                    state, metrics = stepper.train(state, next(batches))
                    step += 1
                    window.add(metrics, step)
                    if on_step is not None:
                        on_step(step)
                    bar.update(1)
                stop_signal = stop.poll(step)
                at_log = step % config.train.log_every == 0 or step == total
                at_eval = step % eval_every == 0 or step == total
                stopping = step < total and (stop_signal is not None or step == stop_at)
                if at_log or at_eval or stopping:
                    read_window(step, log_it=at_log)
                if at_eval and (step == total or step // eval_every > config.train.min_eval_interval):
                    last_eval = run_evaluation(
                        config,
                        stepper.to_canonical(state),
                        eval_fn,
                        eval_loader,
                        step=step,
                        out_dir=workdir,
                        arc_evaluator=arc_evaluator,
                    )
                    writer.write(step, last_eval, prefix="eval/")
                    if primary:
                        log(f"eval step {step}: {format_scalars(last_eval)}")
                    if config.train.checkpoint_every_eval or step == total:
                        save(step, state)
                elif step == total:
                    save(step, state)
                if stopping:
                    save(step, state)
                    checkpointer.wait_until_finished()
                    interrupted = True
                    if primary:
                        reason = f"{stop_signal.name} received" if stop_signal else f"stop_at={stop_at} reached"
                        log(
                            f"{reason}: saved a checkpoint at step {step}/{total} in "
                            f"{checkpointer.directory}; continue with --resume"
                        )
                    break
        checkpointer.wait_until_finished()
    finally:
        bar.close()
        writer.close()
    if primary:
        path = plot_curves(workdir)
        if path is not None:
            print(f"training curves: {path}", flush=True)
    curve = None
    if config.train.depth_curve_steps and step == total:
        curve = _depth_report(
            config, model_config, optim_config, stepper.to_canonical(state), eval_loader, mesh, workdir
        )
    return TrainResult(
        step=step,
        total_steps=total,
        interrupted=interrupted,
        train_metrics=last_train,
        eval_metrics=last_eval,
        workdir=str(workdir),
        stop_signal=stop_signal if interrupted else None,
        depth_curve=curve,
    )


def _depth_report(
    config: ml_collections.ConfigDict,
    model_config: TRMConfig,
    optim_config: OptimConfig,
    state: TrainState,
    eval_loader: PuzzleLoader,
    mesh: jax.sharding.Mesh,
    workdir: Path,
) -> DepthCurve:
    """The finished run's depth curve on its test split: printed, WORKDIR/depth_curve.{json,png}."""
    variables = state.variables(use_ema=optim_config.ema)
    curve = depth_curve(model_config, variables, eval_loader, config.train.depth_curve_steps, mesh)
    if jax.process_index() == 0:
        plot = save_depth_curve(curve, workdir, title=f"{workdir.name}: step {int(jax.device_get(state.step))}")
        print(f"depth curve: {curve.summary()}", flush=True)
        print(f"depth curve: {plot} (+ {workdir / DEPTH_JSON})", flush=True)
    return curve
