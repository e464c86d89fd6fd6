"""How efficiently our train step uses the machine: GFLOP/s and the fraction of a matmul ceiling.

    python benchmarks/efficiency.py                                  # sudoku_mlp + sudoku_att, batch 8 and 32
    python benchmarks/efficiency.py --configs sudoku_mlp --batch-sizes 8 \\
        --set saved_activations=all --name before                   # a model option's effect
    python benchmarks/efficiency.py --profile-dir /tmp/prof         # + where the time goes
    python benchmarks/efficiency.py --configs sudoku_mlp --batch-sizes 32 \
        --microbatches 1,4                                          # gradient accumulation

A step's work is its analytic matmul FLOPs (``common.model_flops_per_step``: the FLOPs MFU
counts). Its efficiency is that work per second divided by a *ceiling* measured in the same
run (``jax_step.MatmulCeiling``: the fastest burst of a jitted [648, 512] x [512, 2048]
matmul in the step's dtype over half a second), timed immediately before every timed step.
On a shared or throttling machine both move together, so the ratio means something where a
bare GFLOP/s figure does not. Each round times every (config, batch) once, interleaved; the
report gives medians over the rounds.

With ``--profile-dir``, two more steps of each are traced (``jax.profiler``; open them in
TensorBoard or Perfetto) and, when ``xprof`` is installed, summed by kind of operation
(``common.op_breakdown``) into the report.

Writes ``<out-dir>/efficiency_<name>.{json,md}``.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
from typing import Any, Sequence  # noqa: E402

import jax  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.jax_step import JaxTrainStep, MatmulCeiling, device_and_dtype  # noqa: E402

SCHEMA = "trm-jax/efficiency/v1"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--configs",
        default="sudoku_mlp,sudoku_att",
        help=f"comma-separated named configs ({', '.join(common.NAMED_CONFIGS)})",
    )
    parser.add_argument("--batch-sizes", default="8,32")
    parser.add_argument("--rounds", type=int, default=5, help="timed steps of each (interleaved)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps of each after compiling")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default=None,
        help="forward dtype; default bfloat16 on GPU, float32 elsewhere",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a model field of every config (repeatable), e.g. saved_activations=all",
    )
    parser.add_argument(
        "--microbatches",
        default="1",
        help="comma-separated optim.microbatches values to time each config "
        "with (chunks of the batch run one after the other)",
    )
    parser.add_argument("--profile-dir", default=None)
    parser.add_argument("--name", default=None, help="output name (default: from the device)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=common.RESULTS_DIR)
    args = parser.parse_args(argv)
    args.configs = common.parse_config_names(parser, args.configs)
    args.batch_sizes = common.parse_positive_ints(parser, "--batch-sizes", args.batch_sizes)
    args.microbatches = common.parse_positive_ints(parser, "--microbatches", args.microbatches)
    for b in args.batch_sizes:
        for m in args.microbatches:
            if b % m:
                parser.error(f"--microbatches {m} does not divide --batch-sizes {b}")
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be >= 1 and --warmup >= 0")
    args.overrides = common.parse_model_overrides(parser, args.set)
    return args


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    """Builds every (config, batch) step, times them in interleaved rounds, returns the report."""
    device, dtype = device_and_dtype(args)
    ceiling = MatmulCeiling(device, dtype, args.seed)
    cases = []
    for name in args.configs:
        bench = common.get_config(name)
        for batch_size in args.batch_sizes:
            for microbatches in args.microbatches:
                config = bench.model_config(batch_size, dtype, **args.overrides)
                step = JaxTrainStep(
                    bench,
                    config,
                    JaxTrainStep.init_variables(config, args.seed),
                    device,
                    args.seed,
                    microbatches=microbatches,
                )
                host_batches = common.synthetic_batches(config, batch_size, 4, seed=args.seed)
                compile_s = step.compile(host_batches[0])
                batches = [step.put(b) for b in host_batches]
                for i in range(args.warmup):
                    step.sync(step(batches[i % len(batches)]))
                cases.append(
                    {
                        "config": name,
                        "batch_size": batch_size,
                        "microbatches": microbatches,
                        "step": step,
                        "batches": batches,
                        "compile_s": compile_s,
                        "flops": common.model_flops_per_step(config, batch_size),
                        "times": [],
                        "ceilings": [],
                    }
                )
                print(
                    f"[efficiency] compiled {name} batch {batch_size} microbatches {microbatches} in {compile_s:.1f} s",
                    file=sys.stderr,
                )
    for r in range(args.rounds):
        for case in cases:
            case["ceilings"].append(ceiling.measure())
            step, batches = case["step"], case["batches"]
            case["times"] += common.time_calls(lambda i: step(batches[i % len(batches)]), step.sync, 1, start_index=r)
        print(f"[efficiency] round {r + 1}/{args.rounds} done", file=sys.stderr)

    rows = [summarize_case(case) for case in cases]
    for row in rows:  # efficiency relative to the first config at the same batch and chunks
        base = next(r for r in rows if (r["batch_size"], r["microbatches"]) == (row["batch_size"], row["microbatches"]))
        row["efficiency_vs_first_config"] = row["fraction_of_ceiling"] / base["fraction_of_ceiling"]
    result = {
        "schema": SCHEMA,
        "meta": common.run_metadata(argv),
        "device": {"jax_platform": device.platform, "kind": device.device_kind},
        "dtype": dtype,
        "overrides": args.overrides,
        "ceiling": ceiling.describe(),
        "rounds": args.rounds,
        "rows": rows,
    }
    if args.profile_dir:
        result["profiles"] = [profile_case(case, args.profile_dir) for case in cases]
        for prof, row in zip(result["profiles"], rows):
            prof["matmul_only_fraction_of_ceiling"] = matmul_only_fraction(row, prof.get("breakdown"))
    return result


def matmul_only_fraction(row: dict[str, Any], breakdown: dict[str, Any] | None) -> float | None:
    """The fraction of the ceiling the step would reach if all but its matrix products took no
    time: its fraction divided by the matmuls' share of the profiled time. An upper bound on
    what removing element-wise, copy and loop overheads can give; None without a breakdown."""
    if not breakdown or not breakdown["categories"]["matmul"]["share"]:
        return None
    return row["fraction_of_ceiling"] / breakdown["categories"]["matmul"]["share"]


def summarize_case(case: dict[str, Any]) -> dict[str, Any]:
    """Median step time, GFLOP/s and fraction of the ceiling (median of per-round ratios)."""
    return {
        "config": case["config"],
        "batch_size": case["batch_size"],
        "microbatches": case["microbatches"],
        "flops_per_step": case["flops"],
        "compile_s": case["compile_s"],
        **common.ceiling_statistics(case["flops"], case["times"], case["ceilings"]),
        "xla_memory": case["step"].memory_analysis,
        "per_round": [{"step_s": t, "ceiling_gflops_per_s": c / 1e9} for t, c in zip(case["times"], case["ceilings"])],
    }


def profile_case(case: dict[str, Any], profile_dir: str, steps: int = 2) -> dict[str, Any]:
    """Traces ``steps`` more steps of one case; sums them by kind of operation if it can."""
    step = case["step"]
    suffix = f"_m{case['microbatches']}" if case["microbatches"] > 1 else ""
    trace_dir = os.path.join(profile_dir, f"{case['config']}_b{case['batch_size']}{suffix}")
    with jax.profiler.trace(trace_dir):
        for i in range(steps):
            step.sync(step(case["batches"][i % len(case["batches"])]))
    out: dict[str, Any] = {
        "config": case["config"],
        "batch_size": case["batch_size"],
        "microbatches": case["microbatches"],
        "trace_dir": trace_dir,
    }
    try:
        events = common.load_trace_events(trace_dir)
    except ImportError:
        out["breakdown"] = None
        out["breakdown_skipped"] = "xprof is not installed (pip install xprof)"
        return out
    out["breakdown"] = common.op_breakdown(step.hlo_text(), events, steps)
    return out


def to_markdown(result: dict[str, Any]) -> str:
    """The report: one row per (config, batch), the profile breakdowns, provenance."""
    meta = result["meta"]
    rows = [
        [
            r["config"],
            r["batch_size"],
            r["microbatches"],
            r["times"]["median_s"] * 1e3,
            r["flops_per_step"] / 1e9,
            r["gflops_per_s"],
            r["ceiling_gflops_per_s"],
            common.format_fraction_of_ceiling(r),
            f"{r['efficiency_vs_first_config']:.2f}",
            common.format_bytes((r.get("xla_memory") or {}).get("temp_size_in_bytes")),
        ]
        for r in result["rows"]
    ]
    lines = [
        f"## step efficiency, {result['dtype']}, {result['device']['kind']}"
        + (f", overrides {result['overrides']}" if result["overrides"] else ""),
        "",
        common.markdown_table(
            [
                "config",
                "batch",
                "microbatches",
                "median step ms",
                "GFLOP/step",
                "GFLOP/s",
                "ceiling GFLOP/s",
                "of ceiling: median (min-max)",
                "vs first config",
                "XLA temp memory",
            ],
            rows,
        ),
        f"- work: analytic matmul FLOPs per train step; ceiling: {result['ceiling']['text']}, "
        f"measured before every timed step; {result['rounds']} interleaved rounds",
    ]
    for prof in result.get("profiles") or []:
        lines.append(
            f"- profile {prof['config']} batch {prof['batch_size']} microbatches "
            f"{prof['microbatches']}: trace in "
            f"`{prof['trace_dir']}`"
        )
        b = prof.get("breakdown")
        if b is None:
            lines.append(f"  ({prof.get('breakdown_skipped')})")
            continue
        parts = ", ".join(f"{c} {v['ms']:.0f} ms ({100 * v['share']:.0f}%)" for c, v in b["categories"].items())
        lines.append(f"  ms per step by kind of operation (under the profiler, {b['total_ms']:.0f} ms in all): {parts}")
        if b.get("busy_ms") is not None:
            lines.append(
                f"  at least one operation running during {b['busy_ms']:.0f} ms a step "
                f"(operations that run at the same time each count their own duration)"
            )
        bound = prof.get("matmul_only_fraction_of_ceiling")
        if bound is not None:
            lines.append(
                f"  matmuls alone: {100 * bound:.0f}% of the ceiling (the step's fraction if all "
                f"other work took no time)"
            )
    lines += [
        *common.provenance_lines(meta),
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """CLI entry point; returns the result document (also written as JSON + markdown)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    result = run(args, argv)
    name = common.report_name(args, result)
    stem = os.path.join(args.out_dir, f"efficiency_{name}")
    common.write_report(stem, result, to_markdown(result), "efficiency")
    return result


if __name__ == "__main__":
    try:
        main()
    except (KeyError, RuntimeError, ValueError) as err:
        print(f"[efficiency] error: {err}", file=sys.stderr)
        sys.exit(2)
