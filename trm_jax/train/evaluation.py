"""Evaluation over a run's test split (EMA weights), with the ARC evaluator when asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from trm_jax.data.loader import PuzzleLoader
from trm_jax.train.metrics import sums_to_means
from trm_jax.train.run_dir import RunDirError
from trm_jax.train.state import TrainState


def host_rows(x: Any) -> np.ndarray:
    """All rows of a batch-sharded global array on the host (every process gets all of them)."""
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
            arc_evaluator.update(host_rows(batch["inputs"]), host_rows(predictions["preds"]),
                                 host_rows(predictions["q_halt_logits"]),
                                 host_rows(batch["puzzle_identifiers"]))
    result = sums_to_means(sums, steps=max(batches, 1), examples=max(sums.get("count", 0.0), 1.0))
    result.pop("loss", None)  # total / global batch per batch: padding rows skew it; lm_loss is the mean
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
