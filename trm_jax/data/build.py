"""Command-line entry for the dataset builders and generators: ``python -m trm_jax.data.build``.

Subcommands::

    sudoku OUT [--source DIR | --hub-repo REPO] [--subsample N] [--num-aug K] [--min-difficulty R] [--seed S]
    maze OUT [--source DIR | --hub-repo REPO] [--subsample N] [--aug] [--seed S]
    gen-sudoku CSV_DIR [--num-train N] [--num-test N] [--seed S] [--workers W] [--blanks B]
    gen-maze CSV_DIR [--num-train N] [--num-test N] [--seed S] [--side 30] [--path-longer-than 110]

Extension hook (ARC): subcommands live in :data:`COMMANDS`. A module may add its own with
:func:`register_command`; :func:`main` imports the modules named in :data:`PLUGIN_MODULES`
(``trm_jax.data.arc``) and, when such a module defines ``register_build_commands(register)``,
calls it with :func:`register_command`. So ``trm_jax/data/arc.py`` only needs::

    def register_build_commands(register):
        register("arc", "build ARC-AGI-1/2 datasets", add_arguments, run)
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

from trm_jax.data.format import OutputExistsError
from trm_jax.signals import Interrupted, signals_interrupt


@dataclass(frozen=True)
class Command:
    """One subcommand: help text, a function adding its arguments, a function running it."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]


COMMANDS: dict[str, Command] = {}
# >>> ARC hook: modules that may define register_build_commands(register) <<<
PLUGIN_MODULES: tuple[str, ...] = ("trm_jax.data.arc",)


def register_command(
    name: str,
    help: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], None],
) -> None:
    """Add (or replace) subcommand ``name``."""
    COMMANDS[name] = Command(help, add_arguments, run)


def _load_plugins() -> None:
    for module_name in PLUGIN_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name == module_name:
                continue  # not written (yet)
            raise
        hook = getattr(module, "register_build_commands", None)
        if hook is not None:
            hook(register_command)


# ----------------------------------------------------------------------------- built-in commands


def _source_args(p: argparse.ArgumentParser, default_repo: str) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--source", metavar="DIR", help="directory with train.csv and test.csv")
    g.add_argument(
        "--hub-repo",
        default=default_repo,
        help=f"hub dataset to download when --source is not given (default {default_repo}; needs huggingface_hub)",
    )
    p.add_argument("--subsample", type=int, default=None, help="keep N random training puzzles")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")


def _sudoku_args(p: argparse.ArgumentParser) -> None:
    from trm_jax.data.sudoku import HUB_REPO

    p.add_argument("out_dir")
    _source_args(p, HUB_REPO)
    p.add_argument("--num-aug", type=int, default=0, help="augmentations per training puzzle")
    p.add_argument("--min-difficulty", type=int, default=None, help="skip rows with a lower rating")


def _sudoku_run(a: argparse.Namespace) -> None:
    from trm_jax.data.sudoku import build_sudoku_dataset

    out = build_sudoku_dataset(
        a.out_dir,
        source_dir=a.source,
        hub_repo=a.hub_repo,
        subsample_size=a.subsample,
        num_aug=a.num_aug,
        min_difficulty=a.min_difficulty,
        seed=a.seed,
        overwrite=a.overwrite,
    )
    print(f"wrote {out}")


def _maze_args(p: argparse.ArgumentParser) -> None:
    from trm_jax.data.maze import HUB_REPO

    p.add_argument("out_dir")
    _source_args(p, HUB_REPO)
    p.add_argument("--aug", action="store_true", help="add the 8 dihedral transforms of each training maze")


def _maze_run(a: argparse.Namespace) -> None:
    from trm_jax.data.maze import build_maze_dataset

    out = build_maze_dataset(
        a.out_dir,
        source_dir=a.source,
        hub_repo=a.hub_repo,
        subsample_size=a.subsample,
        aug=a.aug,
        seed=a.seed,
        overwrite=a.overwrite,
    )
    print(f"wrote {out}")


def _gen_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("csv_dir", help="directory to write train.csv and test.csv into")
    p.add_argument("--num-train", type=int, default=1000)
    p.add_argument("--num-test", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)


def _gen_sudoku_args(p: argparse.ArgumentParser) -> None:
    _gen_common(p)
    p.add_argument("--workers", type=int, default=1, help="worker processes (output does not depend on it)")
    p.add_argument(
        "--blanks",
        type=int,
        default=0,
        help="exactly this many empty cells per puzzle (difficulty); 0: minimal puzzles needing search",
    )


def _gen_sudoku_run(a: argparse.Namespace) -> None:
    from trm_jax.data.generate_sudoku import generate_sudoku_csvs

    print(f"wrote {generate_sudoku_csvs(a.csv_dir, a.num_train, a.num_test, a.seed, a.workers, a.blanks)}")


def _gen_maze_args(p: argparse.ArgumentParser) -> None:
    _gen_common(p)
    p.add_argument("--side", type=int, default=30)
    p.add_argument("--path-longer-than", type=int, default=110, help="shortest path must have more moves")
    p.add_argument("--loop-fraction", type=float, default=0.05, help="fraction of lattice walls removed")


def _gen_maze_run(a: argparse.Namespace) -> None:
    from trm_jax.data.generate_maze import generate_maze_csvs

    print(
        "wrote "
        + str(
            generate_maze_csvs(a.csv_dir, a.num_train, a.num_test, a.seed, a.side, a.path_longer_than, a.loop_fraction)
        )
    )


register_command("sudoku", "build a Sudoku-Extreme dataset from the official CSV", _sudoku_args, _sudoku_run)
register_command("maze", "build a Maze-Hard dataset from the official CSV", _maze_args, _maze_run)
register_command(
    "gen-sudoku", "generate Sudoku CSVs offline (unique solution, needs search)", _gen_sudoku_args, _gen_sudoku_run
)
register_command("gen-maze", "generate maze CSVs offline (long unique shortest path)", _gen_maze_args, _gen_maze_run)


def make_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="trm_jax.data.build", description="Build TRM puzzle datasets.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, cmd in COMMANDS.items():
        cmd.add_arguments(sub.add_parser(name, help=cmd.help, description=cmd.help))
    return parser


EXIT_BAD_INPUT = 2  # as the ``trm-jax`` command: bad input (argparse uses it too)


def error_message(err: BaseException) -> str:
    """One line for the command-line user (``--overwrite`` rather than the library's ``overwrite=True``)."""
    if isinstance(err, OutputExistsError):
        return f"{err.path}: output directory already exists; pass --overwrite to replace it, or choose another"
    return " ".join(str(err).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the subcommand; returns the exit status.

    Bad input (an existing output directory, a missing or malformed source file, a missing
    optional package, an unwritable path) prints one ``error: ...`` line on stderr and returns 2;
    outputs are written to a temporary path and renamed, so nothing is left half-written, also
    when SIGINT or SIGTERM stops the build (one line, status 128 + the signal number).
    """
    _load_plugins()
    args = make_parser().parse_args(argv)
    try:
        with signals_interrupt():
            COMMANDS[args.command].run(args)
    except (ValueError, FileExistsError, RuntimeError, OSError) as e:  # DatasetFormatError is a ValueError
        print(f"error: {error_message(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Interrupted as e:
        print(
            f"error: data {args.command} {e}; the partial output was removed: run the same command again",
            file=sys.stderr,
        )
        return 128 + int(e.signal)
    return 0


if __name__ == "__main__":
    sys.exit(main())
