"""Training depth against accuracy and wall time: the quickstart recipe at a grid of (T, n).

The paper's thesis is that recursion depth (T = H_cycles, n = L_cycles), not width or layers,
drives generalisation. This sweep trains the quickstart recipe (``trm-jax train --config
quickstart``: same data, network width, layers, optimiser and schedule) at each (T, n) of
``--grid``, plus the no-recursion control (T=1, n=1, one supervision step: ``quickstart_control``
's model), each in a fresh run directory, and reports held-out exact accuracy, cell accuracy,
wall time and the effective depth per supervision step, T x (n + 1) x L_layers (the network
layers a step applies to the answer), with a plot of accuracy against wall time::

    python benchmarks/depth_training.py                       # about 30 min on a 2-core CPU
    python benchmarks/depth_training.py --steps 20 --grid 1x1 --name tiny \\
        --config.data.generate.num_train=64 --config.data.generate.num_test=16  # seconds, as in CI

``--config.a.b=v`` arguments are overrides applied to every run.

Equal steps, not equal wall time: every run takes ``--steps`` optimiser steps (the quickstart's
7000) on the same batches in the same order, so accuracy differences come from the depth
alone, and the wall time column is the price of that depth. (At equal wall time a shallow model
would also see more data, mixing two effects; the wall times given let a reader compare at equal
cost.) The generated dataset is made once and shared. Run on an otherwise idle machine: the wall
times are part of the result.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Sequence  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.quickstart_experiment import run_training  # noqa: E402

RESULTS_DIR = Path(common.REPO_ROOT) / "benchmarks" / "results"
CONTROL = "control"


def parse_grid(parser: argparse.ArgumentParser, text: str) -> list[tuple[int, int]]:
    """``"1x1,2x2"`` -> [(1, 1), (2, 2)] (T x n, both >= 1)."""
    grid = []
    for item in (t for t in text.split(",") if t):
        try:
            t, n = (int(v) for v in item.split("x"))
        except ValueError:
            parser.error(f"--grid: expected TxN items such as 2x2, got {item!r}")
        if t < 1 or n < 1:
            parser.error(f"--grid: T and n must be >= 1, got {item!r}")
        grid.append((t, n))
    if not grid:
        parser.error("--grid: expected at least one TxN item")
    return grid


def run_overrides(t: int, n: int, halt_max_steps: int | None, steps: int, extra: Sequence[str]) -> list[str]:
    """The command-line overrides of one grid point (the quickstart config otherwise)."""
    overrides = [
        f"--config.model.H_cycles={t}",
        f"--config.model.L_cycles={n}",
        f"--config.optim.total_steps={steps}",
        f"--config.train.eval_every_steps={steps}",
    ]
    if halt_max_steps is not None:
        overrides.append(f"--config.model.halt_max_steps={halt_max_steps}")
    return overrides + list(extra)


def sweep(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    from trm_jax import configs as configs_lib  # noqa: PLC0415

    base = configs_lib.load_config("quickstart", args.overrides)  # overrides: as every run sees it
    layers = base.model.L_layers
    points = [(CONTROL, 1, 1, 1)] if args.control else []
    points += [(f"T={t} n={n}", t, n, None) for t, n in args.grid]
    data_dir = root / "data"
    runs = []
    for label, t, n, halt in points:
        workdir = root / label.replace(" ", "_").replace("=", "")
        shutil.rmtree(workdir, ignore_errors=True)
        # The first run generates the dataset there; the others find it built and share it.
        extra = [f"--config.data.dataset_dir={data_dir}", *args.overrides]
        run = run_training("quickstart", workdir, run_overrides(t, n, halt, args.steps, extra))
        result = run["result"]
        runs.append(
            {
                "label": label,
                "H_cycles": t,
                "L_cycles": n,
                "halt_max_steps": halt or base.model.halt_max_steps,
                "effective_depth": t * (n + 1) * layers,
                "wall_s": run["wall_s"],
                "exact_accuracy": result["eval/exact_accuracy"],
                "accuracy": result["eval/accuracy"],
                "steps": result["step"],
                "command": run["command"],
                "depth_curve": run["depth_curve"],
                "load_before_1_5_15": run["load_before_1_5_15"],
            }
        )
        print(
            f"{label}: exact {100 * result['eval/exact_accuracy']:.1f}% in {run['wall_s']:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    return runs


def plot(runs: Sequence[dict[str, Any]], out: Path) -> Path:
    """Held-out exact accuracy against wall time, each point labelled (T, n) and its depth."""
    from matplotlib.figure import Figure  # noqa: PLC0415

    from trm_jax.data.render import save_png  # noqa: PLC0415

    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.subplots()
    for index, run in enumerate(runs):
        control = run["label"] == CONTROL
        ax.plot(
            run["wall_s"] / 60,
            100 * run["exact_accuracy"],
            "s" if control else "o",
            ms=8,
            color="gray" if control else "C0",
        )
        ax.annotate(
            f"{run['label']} (depth {run['effective_depth']})",
            (run["wall_s"] / 60, 100 * run["exact_accuracy"]),
            fontsize=7,
            textcoords="offset points",
            xytext=(4, 4 if index % 2 else -10),
        )
    ax.set_xlabel("wall time of the training command (min)")
    ax.set_ylabel("held-out puzzles solved exactly (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.set_title(f"quickstart recipe, {runs[0]['steps']} steps each", fontsize=9)
    fig.tight_layout()
    return save_png(fig, out)


def markdown(runs: Sequence[dict[str, Any]], meta: dict[str, Any], png: str) -> str:
    header = ["run", "T", "n", "supervision steps", "depth per step", "held-out exact", "cell accuracy", "wall time"]
    rows = [
        [
            r["label"],
            r["H_cycles"],
            r["L_cycles"],
            r["halt_max_steps"],
            r["effective_depth"],
            f"{100 * r['exact_accuracy']:.1f}%",
            f"{100 * r['accuracy']:.1f}%",
            f"{r['wall_s'] / 60:.2f} min",
        ]
        for r in runs
    ]
    return (
        "\n".join(
            [
                "# Training depth: the quickstart recipe at several (T, n), equal steps",
                "",
                common.markdown_table(header, rows),
                "",
                "Depth per step: T x (n + 1) x L_layers network layers per supervision step. Control: T=1, n=1 and "
                "one supervision step (no recursion, no deep supervision). Wall time: the whole training command "
                f"(compilation, training, one evaluation and the depth curve). Plot: `{png}`.",
                "",
                *common.provenance_lines(meta),
            ]
        )
        + "\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", default="1x1,1x2,2x1,2x2,3x2,2x4", help="comma-separated TxN (H_cycles x L_cycles)")
    parser.add_argument("--no-control", dest="control", action="store_false", help="skip the no-recursion control")
    parser.add_argument("--steps", type=int, default=7000, help="optimiser steps of every run (the quickstart's 7000)")
    parser.add_argument("--workdir", help="keep the run directories here (default: a temporary directory)")
    parser.add_argument("--out-dir", default=str(RESULTS_DIR))
    parser.add_argument("--name", default="quickstart_cpu", help="results file stem: depth_training_<name>")
    args, args.overrides = parser.parse_known_args(argv)  # --config.a.b=v overrides for every run
    bad = [a for a in args.overrides if not a.startswith("--config.")]
    if bad:
        parser.error(f"unrecognised arguments: {' '.join(bad)} (config overrides look like --config.a.b=v)")
    args.grid = parse_grid(parser, args.grid)
    if args.steps < 1:
        parser.error("--steps: expected >= 1")
    argv = sys.argv[1:] if argv is None else list(argv)
    meta = common.run_metadata(argv)
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="trm-depth-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        runs = sweep(args, root)
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    stem = os.path.join(args.out_dir, f"depth_training_{args.name}")
    png = plot(runs, Path(stem + ".png"))
    common.write_report(stem, {"runs": runs, **meta}, markdown(runs, meta, png.name), "depth_training")
    return 0


if __name__ == "__main__":
    sys.exit(main())
