"""Device memory of the train step from XLA's compiled memory analysis: what batch fits?

For a named config, compiles (never runs) the jitted, state-donating train step at a few
batch sizes, with and without remat of the differentiated cycle, and reads
``compiled.memory_analysis()``: argument bytes (the train state + batch) and temporary bytes
(activations kept for the backward pass and scratch). Memory is linear in the batch, so a
two-point fit gives the largest batch per device under a budget.

The figures are those of the backend the script runs on: on CPU, XLA materialises the
attention scores ([B, heads, L, L]); on a GPU, ``jax.nn.dot_product_attention`` may use
cuDNN's fused attention, which does not, so GPU figures are lower for attention configs.

    python -m benchmarks.memory_fit --config arc --batch-sizes 96,192 --budget-gib 80
    python -m benchmarks.memory_fit --config arc --batch-sizes 384,768 --microbatches 8
"""

from __future__ import annotations

import argparse
import sys
import time

import jax

from benchmarks import common
from benchmarks.jax_step import optim_config_for
from trm_jax.train import step as step_lib
from trm_jax.train.state import create_train_state, example_batch

GIB = 2 ** 30


def analyse(bench: common.BenchConfig, batch_size: int, dtype: str, remat: bool,
            microbatches: int = 1) -> dict:
    """Compiled memory of one train step (GiB), without allocating the state."""
    model_config = bench.model_config(batch_size, dtype, remat=remat)
    optim_config = optim_config_for(bench, batch_size, microbatches)
    state = jax.eval_shape(lambda: create_train_state(model_config, optim_config,
                                                      jax.random.key(0)))
    batch = jax.eval_shape(lambda: example_batch(model_config, batch_size))
    start = time.perf_counter()
    compiled = jax.jit(step_lib.make_train_step(model_config, optim_config),
                       donate_argnums=0).lower(state, batch).compile()
    stats = compiled.memory_analysis()
    arguments = stats.argument_size_in_bytes / GIB
    temp = stats.temp_size_in_bytes / GIB
    return {"batch_size": batch_size, "remat": remat, "microbatches": microbatches,
            "arguments_gib": arguments,
            "temp_gib": temp, "total_gib": arguments + temp,
            "compile_s": time.perf_counter() - start}


def largest_fitting_batch(rows: list[dict], budget_gib: float) -> int | None:
    """Largest batch whose linearly interpolated total memory is within the budget."""
    (a, b) = sorted(rows, key=lambda r: r["batch_size"])[:2]
    slope = (b["total_gib"] - a["total_gib"]) / (b["batch_size"] - a["batch_size"])
    intercept = a["total_gib"] - slope * a["batch_size"]
    if slope <= 0:
        return None
    return int((budget_gib - intercept) // slope)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="arc", choices=sorted(common.NAMED_CONFIGS))
    parser.add_argument("--batch-sizes", default="96,192",
                        help="two or more per-device batch sizes to compile at")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--budget-gib", type=float, default=80.0)
    parser.add_argument("--microbatches", type=int, default=1,
                        help="optim.microbatches of the compiled steps (each batch size must "
                             "be a multiple of it)")
    parser.add_argument("--out-dir", default=common.RESULTS_DIR)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    if len(sizes) < 2:
        parser.error("--batch-sizes needs at least two sizes for the fit")
    if args.microbatches < 1 or any(size % args.microbatches for size in sizes):
        parser.error(f"--microbatches {args.microbatches} must be >= 1 and divide every "
                     f"--batch-sizes value")
    bench = common.get_config(args.config)

    report = {"config": args.config, "dtype": args.dtype, "budget_gib": args.budget_gib,
              "microbatches": args.microbatches,
              "device": jax.devices()[0].device_kind, "platform": jax.default_backend(),
              "rows": [], "largest_fitting_batch": {},
              **common.run_metadata(sys.argv[1:] if argv is None else argv)}
    for remat in (False, True):
        rows = [analyse(bench, size, args.dtype, remat, args.microbatches) for size in sizes]
        report["rows"] += rows
        report["largest_fitting_batch"]["remat" if remat else "no_remat"] = (
            largest_fitting_batch(rows, args.budget_gib))
        for row in rows:
            print(f"{args.config} batch {row['batch_size']:5d} remat={remat!s:5}: state+batch "
                  f"{row['arguments_gib']:.2f} GiB, temporaries {row['temp_gib']:.2f} GiB")

    stem = f"memory_{args.config}_{report['platform']}_{args.dtype}" + (
        f"_mb{args.microbatches}" if args.microbatches > 1 else "")
    chunks = f", {args.microbatches} microbatches" if args.microbatches > 1 else ""
    lines = [f"## train-step memory: `{args.config}`, {args.dtype}{chunks}, "
             f"{report['platform']} ({report['device']})", "",
             "| batch | remat | state + batch GiB | temporaries GiB | total GiB |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['batch_size']} | {r['remat']} | {r['arguments_gib']:.2f} | "
              f"{r['temp_gib']:.2f} | {r['total_gib']:.2f} |" for r in report["rows"]]
    lines += ["", f"Largest per-device batch within {args.budget_gib:g} GiB (linear fit): "
              f"{report['largest_fitting_batch']}", "",
              f"- command: `{report['command']}`",
              "- source: XLA compiled memory analysis of the donated train step (not a run)"]
    common.write_json(f"{args.out_dir}/{stem}.json", report)
    common.write_atomic(f"{args.out_dir}/{stem}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main()
