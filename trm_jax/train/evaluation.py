"""Evaluation over a run's test split (EMA weights), with the ARC evaluator when asked."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from trm_jax.config import OptimConfig, TRMConfig
from trm_jax.data.loader import IGNORE_LABEL_ID, PuzzleLoader
from trm_jax.inference import HaltingPolicy, make_solver, summarize
from trm_jax.train import parallel
from trm_jax.train.metrics import sums_to_means
from trm_jax.train.run_dir import RunDirError
from trm_jax.train.state import TrainState
from trm_jax.train.step_memory import compile_on_first_call
from trm_jax.trajectories import TrajectorySampling


def host_rows(x: Any) -> np.ndarray:
    """All rows of a batch-sharded global array on the host (every process gets all of them)."""
    if jax.process_count() == 1:
        return np.asarray(jax.device_get(x))
    from jax.experimental import multihost_utils  # noqa: PLC0415

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


@dataclasses.dataclass(frozen=True)
class AdaptiveEval:
    """Evaluation with a halting policy and continuous batching (:mod:`trm_jax.inference`)."""

    solve: Callable  # (variables, puzzles) -> per-puzzle results
    cap: int  # the most steps a puzzle runs (the policy's cap for this model)
    use_ema: bool


def halting_policy(config: ml_collections.ConfigDict) -> HaltingPolicy:
    """The evaluation's :class:`~trm_jax.inference.HaltingPolicy` (``train.eval_halting``,
    ``train.eval_num_steps`` as the cap, ``train.eval_halt_threshold``)."""
    return HaltingPolicy(config.train.eval_halting, config.train.eval_num_steps, config.train.eval_halt_threshold)


def make_eval_fn(
    config: ml_collections.ConfigDict,
    model_config: TRMConfig,
    optim_config: OptimConfig,
    mesh: jax.sharding.Mesh,
    state: TrainState,
    policy: HaltingPolicy | None = None,
    sampling: TrajectorySampling = TrajectorySampling(),
    seed: int = 0,
):
    """What :func:`run_evaluation` runs: the batch eval step jitted over ``mesh`` for ``fixed``
    halting (the official evaluation), or an :class:`AdaptiveEval` whose ``train.eval_slots``
    slots (0: the eval batch size) are sharded over ``mesh`` for adaptive halting or several
    noisy trajectories per puzzle (``sampling``, its noise drawn from ``seed``)."""
    policy = halting_policy(config) if policy is None else policy
    if policy.mode == "fixed" and sampling.is_plain:
        step = compile_on_first_call(
            parallel.jit_eval_step(
                model_config, mesh, state, use_ema=optim_config.ema, num_steps=policy.max_steps or None
            ),
            mesh.devices.flat[0].platform,
        )
        return lambda state, batch: step(state, parallel.shard_batch(batch, mesh))
    slots = config.train.eval_slots or config.train.eval_batch_size or config.optim.global_batch_size
    solve = make_solver(model_config, num_slots=slots, policy=policy, sampling=sampling, mesh=mesh)
    if sampling.noise > 0.0:
        solve = functools.partial(_with_key, solve, jax.random.key(seed))
    return AdaptiveEval(solve, policy.cap(model_config), optim_config.ema)


def _with_key(solver: Callable, key: jax.Array, variables: Any, puzzles: Any) -> Any:
    return solver(variables, puzzles, key)


def collect_puzzles(loader: PuzzleLoader, max_batches: int = 0) -> dict[str, np.ndarray]:
    """The test split's rows (padding, rows without any label, dropped) as host arrays, in loader order."""
    if jax.process_count() > 1:
        raise RunDirError(
            "adaptive evaluation (train.eval_halting='adaptive') and noisy trajectories run in one "
            "process; use eval_halting='fixed' and one trajectory for multi-host runs"
        )
    parts: dict[str, list[np.ndarray]] = {"inputs": [], "labels": [], "puzzle_identifiers": []}
    for index, batch in enumerate(loader):
        if max_batches and index >= max_batches:
            break
        real = np.any(np.asarray(batch["labels"]) != IGNORE_LABEL_ID, axis=1)  # padding: no label
        for key in parts:
            parts[key].append(np.asarray(batch[key])[real])
    return {k: np.concatenate(v) for k, v in parts.items()}


def _run_adaptive(
    config: ml_collections.ConfigDict,
    state: TrainState,
    evaluator: AdaptiveEval,
    loader: PuzzleLoader,
    arc_evaluator: Any,
) -> dict[str, float]:
    puzzles = collect_puzzles(loader, config.train.eval_max_batches)
    results = jax.device_get(evaluator.solve(state.variables(use_ema=evaluator.use_ema), puzzles))
    metrics = summarize(results, evaluator.cap)
    if arc_evaluator is not None:
        arc_evaluator.update(
            puzzles["inputs"], results["preds"], results["q_halt_logits"], puzzles["puzzle_identifiers"]
        )
    return metrics


def run_evaluation(
    config: ml_collections.ConfigDict,
    state: TrainState,
    eval_fn: Callable | AdaptiveEval,
    loader: PuzzleLoader,
    *,
    step: int,
    out_dir: Path | None = None,
    arc_evaluator: Any = None,
) -> dict[str, float]:
    """Metrics over the test split (``eval_max_batches`` batches, 0 = all), EMA weights.

    ``eval_fn``: from :func:`make_eval_fn` (or any ``(state, batch) -> (predictions, metric
    sums)``, e.g. :func:`~trm_jax.train.parallel.jit_eval_step`). Means are over the non-padding
    examples; adaptive halting adds ``halted_early`` (fraction of puzzles that stopped before
    the cap). With an ARC evaluator also pass@k, and the submission is written to
    ``out_dir/eval/step_<step>/``.
    """
    if isinstance(eval_fn, AdaptiveEval):
        if arc_evaluator is not None:
            arc_evaluator.begin_eval()
        result = _run_adaptive(config, state, eval_fn, loader, arc_evaluator)
        return _with_arc(result, arc_evaluator, out_dir, step)
    sums: dict[str, float] = {}
    batches = 0
    if arc_evaluator is not None:
        arc_evaluator.begin_eval()
    for index, batch in enumerate(loader):
        if config.train.eval_max_batches and index >= config.train.eval_max_batches:
            break
        predictions, metrics = eval_fn(state, batch)
        batches += 1
        for key, value in jax.device_get(metrics).items():
            sums[key] = sums.get(key, 0.0) + float(value)
        if arc_evaluator is not None:
            arc_evaluator.update(
                host_rows(batch["inputs"]),
                host_rows(predictions["preds"]),
                host_rows(predictions["q_halt_logits"]),
                host_rows(batch["puzzle_identifiers"]),
            )
    result = sums_to_means(sums, steps=max(batches, 1), examples=max(sums.get("count", 0.0), 1.0))
    result.pop("loss", None)  # total / global batch per batch: padding rows skew it; lm_loss is the mean
    return _with_arc(result, arc_evaluator, out_dir, step)


def _with_arc(result: dict[str, float], arc_evaluator: Any, out_dir: Path | None, step: int) -> dict[str, float]:
    if arc_evaluator is not None:
        result.update(arc_evaluator.result())
        if out_dir is not None and jax.process_index() == 0:
            arc_evaluator.write_submission(str(out_dir / "eval" / f"step_{step}"))
    return result


def make_arc_evaluator(config: ml_collections.ConfigDict, path: Path) -> Any:
    """The ARC evaluator (pass@k, submission.json) when ``config.data.evaluator == "arc"``, else None."""
    if config.data.evaluator == "":
        return None
    if config.data.evaluator != "arc":
        raise RunDirError(f"config.data.evaluator={config.data.evaluator!r}: expected 'arc' or ''")
    from trm_jax.data.arc_eval import ArcEvaluator  # noqa: PLC0415

    return ArcEvaluator.from_dataset_dir(str(path), aggregate_across_evals=False)
