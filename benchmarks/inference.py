"""Inference cost against accuracy: fixed depth vs adaptive halting with continuous batching.

Loads a trained run (``--workdir``, e.g. the quickstart's ``runs/quickstart``; or
``--checkpoint DIR --config NAME``) and solves its test split with

- ``batch eval step``: today's evaluation, batch after batch, every puzzle ``halt_max_steps``
  steps (the official loop);
- ``fixed``: the same depth through :func:`trm_jax.inference.solve` (continuous batching,
  every puzzle the same steps);
- ``adaptive@p``: a puzzle stops when ``sigmoid(q_halt) > p`` (at ``halt_max_steps`` at the
  latest) and its slot takes the next puzzle,

on every device JAX sees (the slots sharded over them). For each it reports puzzles/s (median
of ``--repeat`` timed passes after one compiling pass), exact accuracy and the mean number of
supervision steps, and writes ``benchmarks/results/inference_<name>.{json,md,png}``::

    python benchmarks/inference.py --workdir runs/quickstart --name quickstart_cpu

``--copies K`` (default 8) repeats the test split K times: with many more puzzles than slots
(default 64) the slots stay full, which is where continuous batching pays off.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Sequence  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402

RESULTS_DIR = Path(common.REPO_ROOT) / "benchmarks" / "results"


def time_passes(run: Callable[[], Any], repeat: int) -> list[float]:
    """Seconds of ``repeat`` calls of ``run`` (each blocked until its results are ready), after one
    untimed call that compiles."""
    jax.block_until_ready(run())
    return common.time_calls(lambda _: run(), jax.block_until_ready, repeat)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from trm_jax.inference import HaltingPolicy, make_solver, summarize  # noqa: PLC0415
    from trm_jax.train import parallel  # noqa: PLC0415
    from trm_jax.train.evaluation import collect_puzzles, make_eval_fn, run_evaluation  # noqa: PLC0415
    from trm_jax.train.run_dir import make_eval_loader  # noqa: PLC0415

    config, model_config, optim_config, data_path, state, name = common.load_trained_model(args)
    mesh = parallel.make_mesh()
    loader = make_eval_loader(config, data_path)
    puzzles = collect_puzzles(loader)
    puzzles = {k: np.concatenate([v] * args.copies) for k, v in puzzles.items()}
    n = puzzles["inputs"].shape[0]
    slots = args.slots or config.train.eval_batch_size or config.optim.global_batch_size
    slots = -(-slots // mesh.size) * mesh.size
    variables = state.variables(use_ema=optim_config.ema)
    cap = model_config.halt_max_steps
    rows = []

    # Today's evaluation: the batch eval step over the loader's (padded) batches.
    eval_step = parallel.jit_eval_step(model_config, mesh, state, use_ema=optim_config.ema)
    batches = [parallel.shard_batch(b, mesh) for b in loader] * args.copies
    times = time_passes(lambda: [eval_step(state, b) for b in batches], args.repeat)
    metrics = run_evaluation(
        config,
        state,
        make_eval_fn(config, model_config, optim_config, mesh, state, HaltingPolicy("fixed")),
        loader,
        step=int(state.step),
    )
    rows.append(
        {
            "policy": "batch eval step",
            "threshold": None,
            "exact_accuracy": metrics["exact_accuracy"],
            "mean_steps": metrics["steps"],
            "halted_early": 0.0,
            **_rates(times, n),
        }
    )

    policies = [("fixed", HaltingPolicy("fixed"))]
    policies += [(f"adaptive@{p:g}", HaltingPolicy("adaptive", threshold=p)) for p in args.thresholds]
    for label, policy in policies:
        solve = make_solver(model_config, num_slots=slots, policy=policy, mesh=mesh)
        times = time_passes(lambda: solve(variables, puzzles), args.repeat)
        summary = summarize(jax.device_get(solve(variables, puzzles)), cap)
        rows.append(
            {
                "policy": label,
                "threshold": policy.threshold if policy.mode == "adaptive" else None,
                "exact_accuracy": summary["exact_accuracy"],
                "mean_steps": summary["steps"],
                "halted_early": summary["halted_early"],
                **_rates(times, n),
            }
        )
    return {
        "model": name,
        "dataset": str(data_path),
        "num_puzzles": n,
        "slots": slots,
        "devices": mesh.size,
        "platform": mesh.devices.flat[0].platform,
        "halt_max_steps": cap,
        "rows": rows,
    }


def _rates(times: Sequence[float], n: int) -> dict[str, Any]:
    median = float(np.median(times))
    return {"seconds": common.summarize_times(times), "puzzles_per_s": n / median}


def plot(result: dict[str, Any], out: Path) -> Path:
    """Exact accuracy against mean supervision steps per puzzle, each point labelled with puzzles/s."""
    from matplotlib.figure import Figure  # noqa: PLC0415

    from trm_jax.data.render import save_png  # noqa: PLC0415

    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.subplots()
    for row in result["rows"]:
        marker = "s" if row["policy"] == "batch eval step" else "o" if row["policy"] == "fixed" else "^"
        ax.plot(
            row["mean_steps"],
            100 * row["exact_accuracy"],
            marker,
            ms=8,
            label=f"{row['policy']}: {row['puzzles_per_s']:.0f} puzzles/s",
        )
    ax.set_xlabel("mean supervision steps per puzzle")
    ax.set_ylabel("exact accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(
        f"{result['num_puzzles']} puzzles, {result['slots']} slots, {result['devices']} "
        f"{result['platform'].upper()} device(s)",
        fontsize=9,
    )
    fig.tight_layout()
    return save_png(fig, out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_trained_model_args(parser)
    parser.add_argument("--thresholds", type=lambda t: [float(x) for x in t.split(",")], default=[0.5, 0.7, 0.9])
    parser.add_argument(
        "--slots",
        type=int,
        default=64,
        help="rows on the devices (0: the eval batch size; rounded up to a multiple of the devices)",
    )
    parser.add_argument(
        "--copies",
        type=int,
        default=8,
        help="repeat the test split this many times: continuous batching pays off when there "
        "are many more puzzles than slots",
    )
    parser.add_argument("--repeat", type=int, default=5, help="timed passes per policy")
    parser.add_argument("--name", default="run", help="results file name: inference_<name>.*")
    parser.add_argument("--out-dir", default=str(RESULTS_DIR))
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)

    meta = common.run_metadata(argv)
    result = measure(args)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"inference_{args.name}"
    common.write_json(str(out / f"{stem}.json"), {"meta": meta, **result})
    png = plot(result, out / f"{stem}.png")
    base = result["rows"][0]["puzzles_per_s"]
    table = common.markdown_table(
        ["policy", "puzzles/s", "vs batch eval", "exact accuracy", "mean steps", "halted early", "median pass"],
        [
            [
                r["policy"],
                f"{r['puzzles_per_s']:.1f}",
                f"{r['puzzles_per_s'] / base:.2f}x",
                f"{100 * r['exact_accuracy']:.1f}%",
                f"{r['mean_steps']:.2f}",
                f"{100 * r['halted_early']:.1f}%",
                f"{r['seconds']['median_s']:.3f} s",
            ]
            for r in result["rows"]
        ],
    )
    text = (
        f"# Inference: fixed depth vs adaptive halting\n\nCommand: `{meta['command']}` at commit "
        f"`{meta['git_commit']}`, {meta['timestamp_utc']}, on {meta['host']['cpu']} "
        f"({meta['host']['cpu_count']} cores, load {common.load_text(meta['host'])}), jax "
        f"{meta['versions']['jax']}.\n\nModel: {result['model']}; {result['num_puzzles']} test puzzles, "
        f"{result['slots']} slots on {result['devices']} {result['platform'].upper()} device(s), "
        f"halt_max_steps {result['halt_max_steps']}.\n\n" + table + f"\nPlot: `{png.name}`.\n"
    )
    common.write_atomic(str(out / f"{stem}.md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
