"""Memory per batch row of the train step: the official PyTorch step against ours, on this CPU.

Each implementation runs two training steps at two batch sizes, each in a fresh process, and
the process's peak resident memory is read (``ru_maxrss``); the slope between the two sizes
is the memory one more row of the batch costs (weights, optimiser state, puzzle table and
the runtime cancel out). The allocators' reuse of freed memory makes a peak vary from one
process to the next (by 10% and more here): each point is the least of ``--repeat`` processes.
For ours, XLA's compiled memory plan of the same step gives a second
slope (its peak: arguments + outputs - aliased + temporaries).

    python -m benchmarks.memory_per_row --config arc --rows 2,4 --reference-dir ../TinyRecursiveModels
    python -m benchmarks.memory_per_row --config arc --rows 2,4 --set saved_activations=wide_matmuls

The official step runs eagerly (``torch.compile`` needs a GPU here; the official GPU run
compiles, which may keep less), with its own attention (``scaled_dot_product_attention``, a
flash kernel on CPU too). Ours runs the model as configured (``--set`` changes fields); its
CPU attention is XLA's (``attention_impl=auto`` picks a fused kernel only on GPUs and TPUs).
The puzzle table is shrunk to ``--puzzles`` rows: it does not grow with the batch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

GIB = 2**30


def model_config(args: argparse.Namespace, rows: int):
    bench = common.get_config(args.config)
    overrides = dict(args.overrides, num_puzzle_identifiers=args.puzzles)
    return bench, bench.model_config(rows, args.dtype, **overrides)


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One implementation at one batch size: two steps, then the process's peak memory."""
    import jax  # noqa: PLC0415

    from benchmarks.jax_step import JaxTrainStep  # noqa: PLC0415

    bench, config = model_config(args, args.worker_rows)
    batches = common.synthetic_batches(config, args.worker_rows, 2, seed=0)
    variables = JaxTrainStep.init_variables(config, 0)
    out: dict[str, Any] = {"rows": args.worker_rows}
    if args.worker == "official":
        from benchmarks.reference_torch import ReferenceTrainStep  # noqa: PLC0415
        from trm_jax.interop import to_torch_state_dict  # noqa: PLC0415

        step = ReferenceTrainStep(
            args.reference_dir, config, bench.optim, to_torch_state_dict(variables), "cpu", compile_model=False
        )
        del variables
        for batch in batches:
            step(step.to_device(batch))
    else:
        step = JaxTrainStep(bench, config, variables, jax.devices("cpu")[0], 0)
        del variables
        step.compile(batches[0])
        stats = step.memory_analysis
        out["xla_plan_bytes"] = (
            stats["argument_size_in_bytes"]
            + stats["output_size_in_bytes"]
            - stats["alias_size_in_bytes"]
            + stats["temp_size_in_bytes"]
        )
        for batch in batches:
            step.sync(step(step.put(batch)))
    out["peak_rss_bytes"] = common.host_peak_rss_bytes()
    return out


def measure(args: argparse.Namespace, implementation: str, rows: int) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.memory_per_row",
        "--worker",
        implementation,
        "--worker-rows",
        str(rows),
        "--config",
        args.config,
        "--dtype",
        args.dtype,
        "--puzzles",
        str(args.puzzles),
    ] + [f"--set={k}={v}" for k, v in args.overrides.items()]
    if args.reference_dir:
        command += ["--reference-dir", args.reference_dir]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run(command, capture_output=True, text=True, cwd=common.REPO_ROOT, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{implementation} at {rows} rows failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def per_row(points: Sequence[dict[str, Any]], key: str) -> float | None:
    (a, b) = points[0], points[-1]
    if a.get(key) is None or b.get(key) is None:
        return None
    return (b[key] - a[key]) / (b["rows"] - a["rows"])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="arc", choices=sorted(common.NAMED_CONFIGS))
    parser.add_argument("--rows", default="2,4", help="two batch sizes (rows) to run each step at")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--puzzles", type=int, default=1001, help="rows of the puzzle-embedding table")
    parser.add_argument("--repeat", type=int, default=3, help="processes per point (the least peak is kept)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a model field of our step (repeatable), e.g. saved_activations=wide_matmuls",
    )
    parser.add_argument("--reference-dir", default=None, help=f"the official checkout (or ${common.REFERENCE_ENV})")
    parser.add_argument("--name", default="", help="suffix of the result files")
    parser.add_argument("--out-dir", default=common.RESULTS_DIR)
    parser.add_argument("--worker", choices=("ours", "official"), help=argparse.SUPPRESS)
    parser.add_argument("--worker-rows", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.overrides = common.parse_model_overrides(parser, args.set)
    if args.worker:
        print(json.dumps(worker(args)))
        return {}
    args.reference_dir = common.resolve_reference_dir(args.reference_dir)
    rows = common.parse_positive_ints(parser, "--rows", args.rows)
    if len(rows) != 2 or rows[0] >= rows[1]:
        parser.error("--rows: expected two increasing batch sizes, e.g. 2,4")
    implementations = ["ours"] + (["official"] if args.reference_dir else [])
    points = {
        impl: [
            min((measure(args, impl, r) for _ in range(args.repeat)), key=lambda p: p["peak_rss_bytes"]) for r in rows
        ]
        for impl in implementations
    }
    report = {
        "config": args.config,
        "dtype": args.dtype,
        "rows": rows,
        "overrides": args.overrides,
        "puzzles": args.puzzles,
        "repeat": args.repeat,
        "points": points,
        "per_row_bytes": {
            impl: {"peak_rss": per_row(p, "peak_rss_bytes"), "xla_plan": per_row(p, "xla_plan_bytes")}
            for impl, p in points.items()
        },
        **common.run_metadata(sys.argv[1:] if argv is None else argv),
    }
    setting = ", ".join(f"{k}={v}" for k, v in args.overrides.items()) or "as configured"
    table = [
        [
            impl,
            setting if impl == "ours" else "eager, SDPA attention",
            *(f"{p[i]['peak_rss_bytes'] / GIB:.2f}" for i in range(2)),
            f"{report['per_row_bytes'][impl]['peak_rss'] / 2**20:.0f}",
            "n/a"
            if report["per_row_bytes"][impl]["xla_plan"] is None
            else f"{report['per_row_bytes'][impl]['xla_plan'] / 2**20:.0f}",
        ]
        for impl, p in points.items()
    ]
    lines = [
        f"## Train-step memory per row: `{args.config}`, {args.dtype}, CPU (least peak of {args.repeat} "
        f"processes per point)",
        "",
        common.markdown_table(
            [
                "step",
                "setting",
                f"peak RSS at {rows[0]} rows (GiB)",
                f"at {rows[1]} rows (GiB)",
                "MiB per row (RSS)",
                "MiB per row (XLA plan)",
            ],
            table,
        ),
        *common.provenance_lines(report),
    ]
    stem = os.path.join(
        args.out_dir, f"memory_per_row_{args.config}_cpu_{args.dtype}" + (f"_{args.name}" if args.name else "")
    )
    common.write_report(stem, report, "\n".join(lines) + "\n", "memory_per_row")
    return report


if __name__ == "__main__":
    main()
