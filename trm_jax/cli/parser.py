"""The ``trm-jax`` argument parser (``trm-jax data`` has its own, in :mod:`trm_jax.data.build`)."""

from __future__ import annotations

import argparse

from trm_jax.cli.errors import UsageError

OVERRIDES_HELP = (
    "config overrides: any --config.SECTION.KEY=VALUE after the options sets one value of "
    "the config (e.g. --config.optim.lr=3e-4 --config.train.progress_bar=false); the value "
    "takes the type of the current one. `trm-jax config NAME` prints every key and its value; "
    "`trm-jax config` lists the packaged configs."
)


def _add_model_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", help="a run directory of `trm-jax train` (its config.json and checkpoints)")
    p.add_argument(
        "--checkpoint",
        help="an orbax checkpoint directory (WORKDIR/checkpoints); needs --config "
        "unless WORKDIR/config.json is next to it",
    )
    p.add_argument("--torch", metavar="PATH.pt", help="an official PyTorch state_dict; needs --config")
    p.add_argument(
        "--config",
        help="a packaged config's name (quickstart, sudoku_mlp, ...) or a config "
        "file's path; --config.a.b=v overrides follow",
    )
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    p.add_argument("--dataset", help="dataset directory (default: the config's data.dataset_dir)")


def make_parser() -> argparse.ArgumentParser:
    """The ``trm-jax`` argument parser (``data`` has its own, in :mod:`trm_jax.data.build`)."""
    parser = argparse.ArgumentParser(prog="trm-jax", description="Tiny Recursive Models in JAX.", epilog=OVERRIDES_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "data", help="build datasets: trm-jax data {sudoku,maze,gen-sudoku,gen-maze,arc} --help", add_help=False
    )

    p = sub.add_parser(
        "train",
        help="train a config in a run directory",
        epilog=OVERRIDES_HELP + " SIGINT/SIGTERM save a checkpoint and exit with status "
        "128 + the signal number (130, 143); --resume continues the run",
    )
    p.add_argument(
        "--config",
        help="a packaged config's name (quickstart, sudoku_mlp, sudoku_att, maze, arc1, "
        "arc2) or a config file's path; optional with --resume "
        "(WORKDIR/config.json)",
    )
    p.add_argument("--workdir", required=True, help="run directory (checkpoints, metrics, plots)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --workdir")
    p.add_argument(
        "--step",
        type=int,
        default=None,
        help="with --resume: continue from this step (no newer step may be in the directory)",
    )

    from trm_jax.cli.plan import add_parser as add_plan_parser  # noqa: PLC0415

    add_plan_parser(sub, OVERRIDES_HELP)

    p = sub.add_parser(
        "config", help="list the packaged configs, or print one config's keys and values", epilog=OVERRIDES_HELP
    )
    p.add_argument("name", nargs="?", help="a packaged config's name or a config file's path")

    p = sub.add_parser("evaluate", help="evaluate a checkpoint on the test split", epilog=OVERRIDES_HELP)
    _add_model_source(p)
    p.add_argument("--max-batches", type=int, default=0, help="evaluate only this many batches (0: all)")
    p.add_argument(
        "--num-steps", type=int, default=0, help="ACT steps per puzzle (adaptive: the most; 0: halt_max_steps)"
    )
    _add_halting(p)
    p.add_argument("--output", help="also write the metrics to this JSON file")
    p.add_argument(
        "--depth-curve",
        type=int,
        default=0,
        metavar="MAX_STEPS",
        help="also measure exact accuracy after 1, 2, 4, ... MAX_STEPS test-time supervision "
        "steps and the learned halting point; writes depth_curve.{json,png} into --workdir "
        "(or beside --output)",
    )

    p = sub.add_parser("predict", help="solve one Sudoku or maze, print it and write a PNG", epilog=OVERRIDES_HELP)
    _add_model_source(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--puzzle", help="Sudoku: 81 characters, digits and '.' (or 0) for blanks; maze: 900 characters of '# SGo'"
    )
    what.add_argument("--file", help="a text file holding the puzzle (whitespace ignored)")
    p.add_argument("--png", default="prediction.png", help="where to write the picture (default prediction.png)")
    p.add_argument("--num-steps", type=int, default=0, help="ACT steps (adaptive: the most; 0: halt_max_steps)")
    _add_halting(p)
    return parser


def _add_halting(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--halting",
        choices=("fixed", "adaptive"),
        default="fixed",
        help="fixed: every puzzle runs --num-steps steps (the official evaluation); adaptive: a "
        "puzzle stops when its halting head's probability exceeds --threshold (evaluate: "
        "continuous batching, train.eval_slots rows)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="adaptive halting: stop when sigmoid(q_halt) > this (default 0.5, the training rule)",
    )
    p.add_argument(
        "--trajectories",
        type=int,
        default=1,
        metavar="K",
        help="test-time scaling (Probabilistic TRM): run each puzzle K times, with --noise added to "
        "the latent at every supervision step, and report the answer --select picks (default 1)",
    )
    p.add_argument(
        "--noise",
        type=float,
        default=0.0,
        metavar="SIGMA",
        help="standard deviation of the Gaussian noise added to the latent z at every supervision "
        "step (default 0: deterministic)",
    )
    p.add_argument(
        "--select",
        choices=("qhalt", "vote"),
        default="qhalt",
        help="with --trajectories: qhalt, the trajectory whose halting head is most confident (the "
        "paper's rule), or vote, the answer most trajectories reached (both are reported)",
    )
    p.add_argument("--seed", type=int, default=0, help="PRNG seed of the noise (default 0)")


def trajectory_sampling(args: argparse.Namespace):
    """The --trajectories / --noise / --select options (a bad value is a UsageError)."""
    from trm_jax.trajectories import TrajectorySampling  # noqa: PLC0415

    try:
        return TrajectorySampling(args.trajectories, args.noise, args.select)
    except ValueError as err:
        raise UsageError(f"--{str(err).replace('=', ' ', 1)}") from None


def halting_policy(args: argparse.Namespace):
    """The --halting / --threshold / --num-steps policy (a bad combination is a UsageError)."""
    from trm_jax.inference import HaltingPolicy  # noqa: PLC0415

    try:
        return HaltingPolicy(args.halting, args.num_steps, args.threshold)
    except ValueError as err:
        raise UsageError(str(err)) from None
