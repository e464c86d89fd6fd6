"""``trm-jax plan``: a run's memory per device on an accelerator, before renting it."""

from __future__ import annotations

import argparse

from trm_jax.fileio import write_json_atomic


def plan(args: argparse.Namespace, overrides: list[str]) -> int:
    """Compiles the config's steps for ``--target`` and prints the plan (``--json``: also writes it)."""
    from trm_jax import configs as configs_lib  # noqa: PLC0415
    from trm_jax.plan.planner import make_plan  # noqa: PLC0415
    from trm_jax.plan.targets import resolve_target  # noqa: PLC0415

    config = configs_lib.load_config(args.config, overrides)
    target = resolve_target(args.target, args.slices)
    result = make_plan(
        config,
        target,
        config_name=args.config,
        batch_size=args.batch,
        dataset_dir=args.dataset,
        search=not args.no_search,
        memory_fraction=args.memory_fraction,
    )
    print("\n".join(result.lines()), flush=True)
    if args.json:
        write_json_atomic(args.json, result.to_json())
        print(f"plan written to {args.json}")
    return 0


def add_parser(sub: argparse._SubParsersAction, epilog: str) -> None:
    """The ``plan`` subcommand's options."""
    p = sub.add_parser(
        "plan",
        help="memory per device of a config's train and eval steps on an accelerator (compiled ahead of "
        "time, from any machine)",
        epilog="Targets: v5e:2x4, v4:2x2x2, v5p:2x2x1, v6e:4x4 ... (TPU slices: generation:chip shape; needs "
        "pip install -e '.[tpu]'), h100:4, a100:8, l40s:1, h100:2x8 (GPUs, hosts x GPUs; needs "
        "pip install -e '.[cuda12]'), local (this machine's devices). " + epilog,
    )
    p.add_argument(
        "--config",
        required=True,
        help="a packaged config's name (sudoku_mlp, maze, arc1, ...) or a "
        "config file's path; --config.a.b=v overrides follow",
    )
    p.add_argument(
        "--target",
        "--topology",
        dest="target",
        required=True,
        help="what to plan for: a TPU slice (v5e:2x4), GPUs (h100:4) or local",
    )
    p.add_argument("--slices", type=int, default=1, help="TPU slices of that shape (multi-slice); default 1")
    p.add_argument("--batch", type=int, default=None, help="global batch (default: optim.global_batch_size)")
    p.add_argument(
        "--dataset",
        help="a built dataset to take seq_len, vocabulary and puzzle count from "
        "(default: the config's, or the paper dataset it names)",
    )
    p.add_argument(
        "--memory-fraction",
        type=float,
        default=None,
        help="GPU targets: the share of memory JAX's allocator takes (default: "
        "XLA_PYTHON_CLIENT_MEM_FRACTION, else 0.75)",
    )
    p.add_argument(
        "--no-search",
        action="store_true",
        help="compile the configured steps only (no search for microbatches, remat, largest batch)",
    )
    p.add_argument("--json", help="also write the plan to this JSON file")
