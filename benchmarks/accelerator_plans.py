"""Does every paper config fit the accelerators its users run, at the paper's batch?

For each config and target, ``trm_jax.plan.planner.make_plan`` compiles the sharded train step
and the eval step ahead of time (from this machine: no accelerator is used) and reads XLA's
memory plan; when the configured step does not fit, it also finds the fewest microbatches and
whether remat fits. The table is XLA's plan, not a run on the hardware.

    python -m benchmarks.accelerator_plans                     # every paper config x the default targets
    python -m benchmarks.accelerator_plans --configs arc1 --targets h100:4,v5p:2x2x1

Needs libtpu (``pip install -e ".[tpu]"``) for TPU targets and ``pip install -e ".[cuda12]"`` for GPU
targets (its cuDNN is what lets the fused attention be planned); a target whose package is
missing is reported as such in the table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

PAPER_CONFIGS = ("sudoku_mlp", "sudoku_att", "maze", "arc1", "arc2")
# The paper's hardware (4 x H100 for ARC, L40S for Sudoku and mazes) and Cloud TPU slices of 8
# chips / cores, and a slice of 4 hosts.
TARGETS = {
    "h100:4": "4 x H100 80GB",
    "l40s:1": "1 x L40S 48GB",
    "v5e:2x4": "v5e-8",
    "v4:2x2x1": "v4-8",
    "v5p:2x2x1": "v5p-8",
    "v6e:2x4": "v6e-8",
    "v5e:4x4": "v5e-16 (4 hosts)",
}
GIB = 2**30


def plan_one(config_name: str, target_name: str) -> dict[str, Any]:
    from trm_jax import configs as configs_lib  # noqa: PLC0415
    from trm_jax.plan.planner import make_plan  # noqa: PLC0415
    from trm_jax.plan.targets import PlanError, resolve_target  # noqa: PLC0415

    start = time.perf_counter()
    try:
        target = resolve_target(target_name)
        plan = make_plan(configs_lib.load_config(config_name), target, config_name=config_name, largest_batch=False)
    except PlanError as err:
        return {"config": config_name, "target": target_name, "error": str(err)}
    result = plan.to_json()
    result["seconds"] = time.perf_counter() - start
    return result


def setting(row: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """What the run uses on that target, and the plan of it."""
    if row["train"]["exhausted"] is False and row["fits"]:
        return "as configured", row["train"]
    chosen = row.get("fewest_microbatches")
    if chosen is not None:
        prefix = "auto: " if row["microbatches"] == "auto" else ""
        return f"{prefix}optim.microbatches={chosen['value']}", chosen["memory"]
    if (
        row.get("remat") is not None
        and row["remat"]["peak_bytes"] <= (row["budget_bytes"] or 0)
        and not row["remat"]["exhausted"]
    ):
        return "model.remat=true", row["remat"]
    return "does not fit", None


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    table = []
    for row in rows:
        name = TARGETS.get(row["target"], row["target"])
        if "error" in row:
            table.append([row["config"], name, "n/a", "not planned", row["error"], "", "", ""])
            continue
        used, memory = setting(row)
        whole = row["train"]
        attention = row["attention_impl"] if row["config"] != "sudoku_mlp" else "(mlp_t)"
        table.append(
            [
                row["config"],
                f"{name}: {row['devices']} x {row['device_kind']}",
                f"{row['global_batch_size'] // row['devices']}",
                used,
                "n/a" if memory is None else f"{memory['peak_bytes'] / GIB:.1f} / {row['budget_bytes'] / GIB:.1f}",
                "n/a" if memory is None else f"{memory['compile_s']:.0f}",
                f"{whole['peak_bytes'] / GIB:.1f}" + (" (refused)" if whole["exhausted"] else ""),
                attention,
                f"{row['eval']['peak_bytes'] / GIB:.1f}",
            ]
        )
    header = [
        "config",
        "target",
        "rows / device",
        "fits with",
        "train step: peak / budget GiB per device",
        "its compile s",
        "1 microbatch: peak GiB",
        "attention",
        "eval step: peak GiB",
    ]
    return (
        "\n".join(
            [
                "## Paper configs on accelerators: XLA's memory plan at the paper's batch (768)",
                "",
                "Compiled ahead of time from a CPU; not a run on the hardware. GPU budget: the 75% of memory "
                'JAX\'s allocator takes by default. "refused": the TPU compiler stopped with RESOURCE_EXHAUSTED '
                "(the figure is its temporaries plus the arguments).",
                "",
                common.markdown_table(header, table),
                *common.provenance_lines(meta),
            ]
        )
        + "\n"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(PAPER_CONFIGS))
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--name", default="", help="suffix of the result files")
    parser.add_argument("--out-dir", default=common.RESULTS_DIR)
    args = parser.parse_args(argv)
    rows = []
    for config_name in [c for c in args.configs.split(",") if c]:
        for target_name in [t for t in args.targets.split(",") if t]:
            row = plan_one(config_name, target_name)
            print(
                f"[accelerator_plans] {config_name} on {target_name}: "
                f"{row.get('verdict', row.get('error'))} ({row.get('seconds', 0):.0f} s)",
                file=sys.stderr,
                flush=True,
            )
            rows.append(row)
    meta = common.run_metadata(sys.argv[1:] if argv is None else argv)
    report = {"rows": rows, **meta}
    stem = os.path.join(args.out_dir, "accelerator_plans" + (f"_{args.name}" if args.name else ""))
    common.write_report(stem, report, markdown(rows, meta), "accelerator_plans")
    return report


if __name__ == "__main__":
    main()
