"""Test-time scaling: held-out exact accuracy against inference compute, with K noisy trajectories.

Loads a trained run (``--workdir``, e.g. the quickstart's ``runs/quickstart``) and solves its
test split with :func:`trm_jax.inference.solve` and
:class:`~trm_jax.trajectories.TrajectorySampling`: K trajectories per puzzle, Gaussian noise of
scale sigma added to the latent z at every supervision step, for every K of ``--trajectories``,
sigma of ``--noise`` and halting policy of ``--halting``. Each row reports the exact accuracy of
both selection rules (highest q_halt, the paper's; majority vote), of the best trajectory
("oracle": some trajectory solved the puzzle), how many trajectories agreed with the chosen
answer, the supervision steps spent per puzzle (all trajectories), puzzles/s of one timed pass
after compiling, and the puzzles no trajectory solved. Writes
``benchmarks/results/test_time_scaling_<name>.{json,md,png}``::

    python benchmarks/test_time_scaling.py --workdir runs/quickstart --name quickstart_cpu

K = 1 with sigma = 0 is the deterministic evaluation (the first row).
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Sequence  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402

RESULTS_DIR = Path(common.REPO_ROOT) / "benchmarks" / "results"


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from trm_jax.inference import HaltingPolicy, make_solver, summarize  # noqa: PLC0415
    from trm_jax.train import parallel  # noqa: PLC0415
    from trm_jax.train.evaluation import collect_puzzles  # noqa: PLC0415
    from trm_jax.train.run_dir import make_eval_loader  # noqa: PLC0415
    from trm_jax.trajectories import TrajectorySampling  # noqa: PLC0415

    config, model_config, optim_config, data_path, state, name = common.load_trained_model(args)
    mesh = parallel.make_mesh()
    puzzles = collect_puzzles(make_eval_loader(config, data_path), args.max_batches)
    n = puzzles["inputs"].shape[0]
    slots = -(-args.slots // mesh.size) * mesh.size
    variables = state.variables(use_ema=optim_config.ema)
    key = jax.random.key(args.seed)
    rows, unsolved = [], {}
    grid = [(1, 0.0)] + [(k, sigma) for sigma in args.noise for k in args.trajectories]
    for halting in args.halting:
        policy = HaltingPolicy("adaptive", threshold=args.threshold) if halting == "adaptive" else HaltingPolicy()
        for k, sigma in grid:
            sampling = TrajectorySampling(k, sigma, noise_on=args.noise_on)
            solver = make_solver(model_config, num_slots=slots, policy=policy, sampling=sampling, mesh=mesh)
            inputs = (variables, puzzles, key) if sigma > 0 else (variables, puzzles)
            start = time.perf_counter()
            compiled = solver.lower(*inputs).compile()
            compile_s = time.perf_counter() - start
            start = time.perf_counter()
            results = jax.device_get(jax.block_until_ready(compiled(*inputs)))
            seconds = time.perf_counter() - start
            summary = summarize(results, policy.cap(model_config))
            oracle = np.asarray(results.get("oracle_exact", results["exact"]))
            rows.append(
                {
                    "halting": policy.mode,
                    "trajectories": k,
                    "noise": sigma,
                    "exact_qhalt": summary.get("exact_qhalt", summary["exact_accuracy"]),
                    "exact_vote": summary.get("exact_vote", summary["exact_accuracy"]),
                    "oracle_exact": float(oracle.mean()),
                    "agreement": summary.get("agreement", 1.0),
                    "steps_per_puzzle": summary.get("trajectory_steps", summary["steps"]),
                    "seconds": seconds,
                    "compile_s": compile_s,
                    "puzzles_per_s": n / seconds,
                }
            )
            unsolved[f"{policy.mode} K={k} sigma={sigma:g}"] = np.flatnonzero(~oracle).tolist()
            print(_row_text(rows[-1]), file=sys.stderr, flush=True)
    return {
        "model": name,
        "dataset": str(data_path),
        "num_puzzles": n,
        "slots": slots,
        "devices": mesh.size,
        "platform": mesh.devices.flat[0].platform,
        "halt_max_steps": model_config.halt_max_steps,
        "noise_on": args.noise_on,
        "seed": args.seed,
        "threshold": args.threshold,
        "rows": rows,
        "unsolved_by_every_trajectory": unsolved,
    }


def _row_text(row: dict[str, Any]) -> str:
    return (
        f"{row['halting']} K={row['trajectories']} sigma={row['noise']:g}: exact {100 * row['exact_qhalt']:.1f}% "
        f"(qhalt) {100 * row['exact_vote']:.1f}% (vote) {100 * row['oracle_exact']:.1f}% (oracle), "
        f"{row['steps_per_puzzle']:.1f} steps/puzzle, {row['puzzles_per_s']:.1f} puzzles/s"
    )


def plot(result: dict[str, Any], out: Path) -> Path:
    """Exact accuracy (q_halt selection) against supervision steps per puzzle, one line per
    (halting, sigma), K along each line; dashed: the oracle."""
    from matplotlib.figure import Figure  # noqa: PLC0415

    from trm_jax.data.render import save_png  # noqa: PLC0415

    fig = Figure(figsize=(7.0, 4.5))
    ax = fig.subplots()
    baseline = {r["halting"]: r for r in result["rows"] if r["noise"] == 0.0 and r["trajectories"] == 1}
    lines = sorted({(r["halting"], r["noise"]) for r in result["rows"] if r["noise"] > 0})
    for halting, sigma in lines:
        rows = [baseline[halting]] + [r for r in result["rows"] if (r["halting"], r["noise"]) == (halting, sigma)]
        x = [r["steps_per_puzzle"] for r in rows]
        (line,) = ax.plot(
            x,
            [100 * r["exact_qhalt"] for r in rows],
            "o-" if halting == "fixed" else "^-",
            label=f"{halting} halting, sigma {sigma:g}",
        )
        ax.plot(x, [100 * r["oracle_exact"] for r in rows], ":", color=line.get_color())
        for r, xi in zip(rows[1:], x[1:]):
            ax.annotate(
                f"K={r['trajectories']}",
                (xi, 100 * r["exact_qhalt"]),
                fontsize=6,
                textcoords="offset points",
                xytext=(2, -8),
            )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("supervision steps per puzzle (all trajectories)")
    ax.set_ylabel("exact accuracy (%), q_halt selection; dotted: oracle")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{result['num_puzzles']} held-out puzzles, noise on {result['noise_on']}", fontsize=9)
    fig.tight_layout()
    return save_png(fig, out)


def markdown(result: dict[str, Any], meta: dict[str, Any]) -> str:
    header = [
        "halting",
        "K",
        "sigma",
        "exact, q_halt",
        "exact, vote",
        "oracle",
        "agreement",
        "steps/puzzle",
        "puzzles/s",
    ]
    rows = [
        [
            r["halting"],
            r["trajectories"],
            f"{r['noise']:g}",
            f"{100 * r['exact_qhalt']:.1f}%",
            f"{100 * r['exact_vote']:.1f}%",
            f"{100 * r['oracle_exact']:.1f}%",
            f"{r['agreement']:.2f}",
            f"{r['steps_per_puzzle']:.1f}",
            f"{r['puzzles_per_s']:.1f}",
        ]
        for r in result["rows"]
    ]
    lines = [
        "# Test-time scaling: K noisy trajectories per puzzle",
        "",
        f"Model: {result['model']}; {result['num_puzzles']} test puzzles, {result['slots']} slots on "
        f"{result['devices']} {result['platform'].upper()} device(s), halt_max_steps "
        f"{result['halt_max_steps']}; noise on {result['noise_on']} at every supervision step, seed "
        f"{result['seed']}; adaptive halting at sigmoid(q_halt) > {result['threshold']:g}.",
        "",
        common.markdown_table(header, rows),
        "",
        "Exact: the chosen trajectory's answer is the solution; oracle: some trajectory's is; agreement: "
        "trajectories that reached the chosen (q_halt) answer; steps/puzzle: supervision steps of all K "
        "trajectories; puzzles/s: one pass after compiling.",
        "",
        *common.provenance_lines(meta),
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_trained_model_args(parser)
    parser.add_argument("--max-batches", type=int, default=0, help="test batches to use (0: all)")
    parser.add_argument(
        "--trajectories", default="2,4,8,16,32", help="comma-separated K (the K = 1, sigma = 0 baseline always runs)"
    )
    parser.add_argument("--noise", default="0.3,1", help="comma-separated sigma > 0")
    parser.add_argument("--noise-on", default="z_L", choices=("z_L", "z_H", "both"))
    parser.add_argument("--halting", default="fixed,adaptive", help="comma-separated: fixed, adaptive")
    parser.add_argument("--threshold", type=float, default=0.5, help="adaptive halting threshold")
    parser.add_argument("--slots", type=int, default=256, help="rows on the devices")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="run", help="results file name: test_time_scaling_<name>.*")
    parser.add_argument("--out-dir", default=str(RESULTS_DIR))
    args = parser.parse_args(argv)
    args.trajectories = common.parse_positive_ints(parser, "--trajectories", args.trajectories)
    args.noise = _floats(args.noise)
    if not args.noise or min(args.noise) <= 0:
        parser.error("--noise: expected comma-separated values > 0")
    args.halting = [h for h in args.halting.split(",") if h]
    if not args.halting or set(args.halting) - {"fixed", "adaptive"}:
        parser.error("--halting: expected fixed and/or adaptive")
    argv = sys.argv[1:] if argv is None else list(argv)
    meta = common.run_metadata(argv)
    result = {**measure(args), **meta}
    stem = os.path.join(args.out_dir, f"test_time_scaling_{args.name}")
    common.write_report(stem, result, markdown(result, meta), "test_time_scaling")
    plot(result, Path(stem + ".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
