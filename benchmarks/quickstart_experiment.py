"""The quickstart's claim, measured: recursion solves held-out Sudoku that one pass does not.

Runs the README's first command (``trm-jax train --config quickstart``) ``--repeat`` times and
the control (``trm-jax train --config quickstart_control``: the same network and data without
the recursion, T=1, n=1, one supervision step, trained for about the same wall time) once,
each in a fresh run directory, each timed from the command's start to its end (data
generation, compilation, training, evaluations and the depth curve included). Collects
held-out exact accuracy, the test-time depth curve and the learned halting point of every
run, and writes ``benchmarks/results/quickstart.{json,md,png}`` with the command, commit,
machine and its load::

    python benchmarks/quickstart_experiment.py --repeat 3
    python benchmarks/quickstart_experiment.py --repeat 0 --name quickstart_control  # the control alone

Run it on an otherwise idle machine: the wall times are the point. ``--workdir`` keeps the run
directories (default: a temporary directory, removed at the end).
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Sequence  # noqa: E402

from benchmarks import common  # noqa: E402

RESULTS_DIR = Path(common.REPO_ROOT) / "benchmarks" / "results"
STEM = "quickstart"


def run_training(config: str, workdir: Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """``trm-jax train --config CONFIG --workdir WORKDIR``, timed; its result and depth curve."""
    command = [
        sys.executable,
        "-m",
        "trm_jax",
        "train",
        "--config",
        config,
        "--workdir",
        str(workdir),
        "--config.train.progress_bar=false",
        *overrides,
    ]
    load_before = os.getloadavg()
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    result = json.loads(proc.stdout.strip().splitlines()[-1])  # the CLI's last line is its result
    curve = json.loads((workdir / "depth_curve.json").read_text())
    return {
        "config": config,
        "wall_s": wall,
        "load_before_1_5_15": list(load_before),
        "load_after_1_5_15": list(os.getloadavg()),
        "result": result,
        "depth_curve": curve,
        "command": " ".join(["trm-jax", *command[3:]]),
    }


def summary_rows(runs: Sequence[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for run in runs:
        curve = run["depth_curve"]
        at = dict(zip(curve["steps"], curve["exact_accuracy"]))
        rows.append(
            [
                run["config"],
                f"{run['wall_s'] / 60:.2f} min",
                f"{100 * run['result']['eval/exact_accuracy']:.1f}%",
                f"{100 * run['result']['eval/accuracy']:.1f}%",
                " / ".join(f"{s}: {100 * a:.1f}%" for s, a in at.items()),
                f"{curve['halting_mean_steps']:.2f} steps, {100 * curve['halting_exact_accuracy']:.1f}%",
                "/".join(f"{x:.1f}" for x in run["load_before_1_5_15"]),
            ]
        )
    return rows


def plot(runs: Sequence[dict[str, Any]], out: Path) -> Path:
    """Exact accuracy against test-time supervision steps: every quickstart run and the control."""
    from matplotlib.figure import Figure  # noqa: PLC0415

    from trm_jax.data.render import save_png  # noqa: PLC0415

    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.subplots()
    for i, run in enumerate(runs):
        curve = run["depth_curve"]
        control = run["config"] != "quickstart"
        label = "control: no recursion (T=1, n=1, 1 step)" if control else f"quickstart run {i + 1}"
        style = "s--" if control else "o-"
        ax.plot(curve["steps"], [100 * a for a in curve["exact_accuracy"]], style, label=label, alpha=0.8)
        ax.plot([curve["halting_mean_steps"]], [100 * curve["halting_exact_accuracy"]], "r*", ms=10)
    ax.set_xscale("log", base=2)
    steps = runs[0]["depth_curve"]["steps"]
    ax.set_xticks(steps, [str(s) for s in steps])
    ax.set_xlabel("supervision steps at test time (red stars: learned halting)")
    ax.set_ylabel("held-out puzzles solved exactly (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="quickstart runs (default 3)")
    parser.add_argument("--no-control", action="store_true", help="skip the control run")
    parser.add_argument("--workdir", help="keep the run directories here (default: a temporary directory)")
    parser.add_argument("--out-dir", default=str(RESULTS_DIR))
    parser.add_argument("--name", default=STEM, help=f"results file stem (default {STEM})")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)

    meta = common.run_metadata(argv)
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="trm-quickstart-"))
    root.mkdir(parents=True, exist_ok=True)
    runs = []
    try:
        jobs = [("quickstart", f"quickstart_{i + 1}") for i in range(args.repeat)]
        if not args.no_control:
            jobs.append(("quickstart_control", "control"))
        for config, name in jobs:
            if (root / name).exists():
                shutil.rmtree(root / name)
            run = run_training(config, root / name)
            runs.append(run)
            print(f"{name}: {run['wall_s']:.0f} s, exact {100 * run['result']['eval/exact_accuracy']:.1f}%", flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    common.write_json(str(out / f"{args.name}.json"), {"meta": meta, "runs": runs})
    png = plot(runs, out / f"{args.name}.png")
    header = [
        "config",
        "wall time",
        "held-out exact",
        "cell accuracy",
        "exact by test-time steps",
        "learned halting",
        "load before (1/5/15 min)",
    ]
    text = (
        f"# Quickstart: held-out Sudoku solved, with and without recursion\n\n"
        f"Command: `{meta['command']}` at commit `{meta['git_commit']}`, "
        f"{meta['timestamp_utc']}, on {meta['host']['cpu']} ({meta['host']['cpu_count']} cores), "
        f"jax {meta['versions']['jax']}.\n\n"
        + common.markdown_table(header, summary_rows(runs))
        + f"\nWall time: the whole command (data generation, compilation, training, evaluations, "
        f"depth curve). Plot: `{png.name}`.\n"
    )
    common.write_atomic(str(out / f"{args.name}.md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
