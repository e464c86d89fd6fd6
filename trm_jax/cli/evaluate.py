"""``trm-jax evaluate``: metrics of a model on a dataset's test split, and its depth curve."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trm_jax.cli.errors import UsageError
from trm_jax.cli.model_source import resolve_model
from trm_jax.cli.parser import halting_policy, trajectory_sampling
from trm_jax.fileio import write_json_atomic


def evaluate(args: argparse.Namespace, overrides: list[str]) -> int:
    """Evaluates the model of ``args`` on its test split; prints (and with --output writes) the metrics."""
    from trm_jax.train import loop, parallel  # noqa: PLC0415
    from trm_jax.train.evaluation import make_eval_fn  # noqa: PLC0415

    config, model_config, optim_config, data_path, state, source = resolve_model(args, overrides)
    if args.max_batches:
        config.train.eval_max_batches = args.max_batches
    if not (data_path / "test" / "dataset.json").is_file():
        raise loop.RunDirError(f"dataset directory {data_path} does not exist (no test/dataset.json)")
    mesh = parallel.make_mesh()
    eval_fn = make_eval_fn(
        config, model_config, optim_config, mesh, state, halting_policy(args), trajectory_sampling(args), args.seed
    )
    eval_loader = loop.make_eval_loader(config, data_path)
    arc = loop.make_arc_evaluator(config, data_path)
    step = int(state.step)
    out_dir = Path(args.workdir) if args.workdir else None
    metrics = loop.run_evaluation(config, state, eval_fn, eval_loader, step=step, out_dir=out_dir, arc_evaluator=arc)
    result = {"source": source, "dataset": str(data_path), **metrics}
    if args.depth_curve:
        result["depth_curve"] = _depth_curve(args, config, model_config, optim_config, state, eval_loader, mesh, source)
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        write_json_atomic(args.output, result)
    return 0


def _depth_curve(
    args: argparse.Namespace, config, model_config, optim_config, state, eval_loader, mesh, source: str
) -> dict:
    from trm_jax.train import depth_curve as depth  # noqa: PLC0415

    if args.depth_curve < 1:
        raise UsageError(f"--depth-curve {args.depth_curve}: expected a number of steps >= 1")
    curve = depth.depth_curve(
        model_config, state.variables(use_ema=optim_config.ema), eval_loader, args.depth_curve, mesh
    )
    out_dir = Path(args.workdir) if args.workdir else Path(args.output).parent if args.output else None
    if out_dir is not None:
        depth.save_depth_curve(curve, out_dir, title=source)
    print(f"depth curve: {curve.summary()}", file=sys.stderr, flush=True)
    return curve.to_dict()
