"""The ``trm-jax`` command (also ``python -m trm_jax``).

Subcommands::

    trm-jax data {sudoku,maze,gen-sudoku,gen-maze,arc} ...      build datasets (trm_jax.data.build)
    trm-jax train --config x [--config.a.b=v ...] --workdir DIR [--resume [--step N]]
    trm-jax evaluate --workdir DIR [--step N]
    trm-jax evaluate --checkpoint DIR/checkpoints --config x
    trm-jax evaluate --torch model.pt --config x    an official PyTorch checkpoint
    trm-jax predict --workdir DIR --puzzle '5.3..7....'        (or --file PUZZLE.txt) [--png OUT.png]
    trm-jax config [x [--config.a.b=v ...]]      list the packaged configs, or print one's keys
    trm-jax plan --config x --target v5e:2x4|h100:4|local [--batch N] [--config.a.b=v ...]
                                                 memory per device on an accelerator (trm_jax.plan)

Bad input (an unknown config key or invalid config value, a missing dataset directory, a
checkpoint written for another architecture or damaged on disk, a missing optional package, an
unreadable puzzle) prints one ``error: ...`` line on stderr and exits with status 2, before
anything is written. A non-finite loss stops training with status 1.

A damaged newest checkpoint: ``evaluate``/``predict`` take an older step with ``--step N``;
``train --resume`` continues from the newest step, so move the damaged step directory aside
(``mv DIR/checkpoints/N DIR/checkpoints/N.damaged``; orbax ignores that name) and resume again.
``train --resume --step N`` restores step N and refuses while newer steps are in the directory
(later saves would meet them).
``train`` stopped by SIGINT or SIGTERM saves a checkpoint (to continue with ``--resume``) and
exits with 128 + the signal number, 130 or 143, as the shell reports a death by that signal, so
a scheduler can tell it from a finished run (0). Before the first step (data generation,
compilation) the signal stops it with the same status, one line and nothing half-written.
A run directory another live ``train`` holds is refused (status 2, one line naming it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from trm_jax.cli.errors import UsageError
from trm_jax.cli.evaluate import evaluate
from trm_jax.cli.model_source import resolve_model  # noqa: F401 - part of the command line's API
from trm_jax.cli.parser import make_parser
from trm_jax.cli.plan import plan
from trm_jax.cli.predict import predict

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def _split_overrides(rest: Sequence[str]) -> list[str]:
    from trm_jax.configs import OVERRIDE_PREFIX  # noqa: PLC0415

    bad = [a for a in rest if not a.startswith(OVERRIDE_PREFIX)]
    if bad:
        raise UsageError(f"unrecognised argument {bad[0]!r} (config overrides look like --config.train.seed=1)")
    return list(rest)


# ---------------------------------------------------------------------------------- config


def _config(args: argparse.Namespace, overrides: list[str]) -> int:
    """Lists the packaged configs, or prints one config (overrides applied) as JSON."""
    from trm_jax import configs as configs_lib  # noqa: PLC0415

    if not args.name:
        if overrides:
            raise UsageError("config overrides need a config name: trm-jax config NAME --config.a.b=v")
        print("\n".join(configs_lib.config_names()))
        return 0
    config = configs_lib.load_config(args.name, overrides)
    print(json.dumps(configs_lib.config_to_dict(config), indent=2))
    return 0


# ---------------------------------------------------------------------------------- train


def _train(args: argparse.Namespace, overrides: list[str]) -> int:
    from trm_jax import configs as configs_lib  # noqa: PLC0415
    from trm_jax.train import loop  # noqa: PLC0415

    workdir = Path(args.workdir)
    if args.config:
        config = configs_lib.load_config(args.config, overrides)
    elif args.resume and (workdir / loop.CONFIG_NAME).is_file():
        config = configs_lib.config_from_json(workdir / loop.CONFIG_NAME)
        configs_lib.apply_overrides(config, overrides)
    else:
        raise UsageError("train needs --config (or --resume with a run directory holding config.json)")
    if args.step is not None and not args.resume:
        raise UsageError("--step needs --resume (it names the checkpoint to continue from)")
    result = loop.train(config, workdir, resume=args.resume, step=args.step)
    summary = {
        "step": result.step,
        "total_steps": result.total_steps,
        "interrupted": result.interrupted,
        "signal": result.stop_signal.name if result.stop_signal else None,
    }
    summary.update({f"eval/{k}": v for k, v in result.eval_metrics.items()})
    print(json.dumps(summary))
    return 128 + int(result.stop_signal) if result.stop_signal else 0


# ----------------------------------------------------------------------------------- main


def _bad_input_errors() -> tuple[type[BaseException], ...]:
    from trm_jax.config import ConfigError  # noqa: PLC0415
    from trm_jax.configs import ConfigLoadError  # noqa: PLC0415
    from trm_jax.data.format import DatasetFormatError  # noqa: PLC0415
    from trm_jax.interop import CheckpointMismatchError as TorchMismatch  # noqa: PLC0415
    from trm_jax.plan.targets import PlanError  # noqa: PLC0415
    from trm_jax.train.checkpoint import CheckpointDamagedError, CheckpointMismatchError  # noqa: PLC0415
    from trm_jax.train.loop import RunDirError  # noqa: PLC0415
    from trm_jax.train.run_lock import RunLockedError  # noqa: PLC0415

    return (
        UsageError,
        ConfigError,
        ConfigLoadError,
        DatasetFormatError,
        TorchMismatch,
        CheckpointMismatchError,
        CheckpointDamagedError,
        RunDirError,
        FileNotFoundError,
        PlanError,
        RunLockedError,
    )


def damaged_checkpoint_message(err, command: str) -> str:
    """The CLI's advice for a :class:`~trm_jax.train.checkpoint.CheckpointDamagedError`.

    ``evaluate``/``predict`` can pick an older step with ``--step``; ``train --resume`` continues
    from the newest step, so the damaged directory has to be moved aside first (never done for
    the user: it is their data).
    """
    head = f"checkpoint step {err.step} in {err.directory} is damaged ({err.reason})"
    older = err.intact_steps
    if command == "train":
        if older:
            return (
                f"{head}; older steps that look intact: {', '.join(map(str, older))}. To continue from step "
                f"{older[-1]}, move the damaged step aside (mv {err.step_dir} {err.step_dir}.damaged) and run "
                f"train --resume again"
            )
        return f"{head}; no older step to continue from: start a new run in another --workdir"
    if older:
        return f"{head}; older steps that look intact: {', '.join(map(str, older))}; use one with --step {older[-1]}"
    return f"{head}; no older step to fall back on"


def _one_line(err: BaseException, command: str = "") -> str:
    from trm_jax.train.checkpoint import CheckpointDamagedError  # noqa: PLC0415

    if isinstance(err, CheckpointDamagedError):
        return damaged_checkpoint_message(err, command)
    return " ".join(str(err).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (2: bad input, 1: the run failed)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "data":
        from trm_jax.data.build import main as build_main  # noqa: PLC0415

        return build_main(argv[1:])
    args, rest = make_parser().parse_known_args(argv)
    commands = {"train": _train, "evaluate": evaluate, "predict": predict, "config": _config, "plan": plan}
    bad_input = _bad_input_errors()
    from trm_jax.signals import Interrupted  # noqa: PLC0415
    from trm_jax.train.loop import TrainingError  # noqa: PLC0415

    try:
        return commands[args.command](args, _split_overrides(rest))
    except Interrupted as err:
        print(f"error: {interrupted_message(err, args.command)}", file=sys.stderr)
        return 128 + int(err.signal)
    except bad_input as err:
        print(f"error: {_one_line(err, args.command)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrainingError as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as err:  # noqa: BLE001 - XLA's out-of-memory errors are its runtime error type
        if "RESOURCE_EXHAUSTED" not in str(err):
            raise
        print(f"error: {out_of_memory_message(err)}", file=sys.stderr)
        return EXIT_FAILED


def interrupted_message(err: BaseException, command: str) -> str:
    """One line for SIGINT/SIGTERM before a command's main loop (no checkpoint was written)."""
    when = "before the first training step" if command == "train" else "while it ran"
    return (
        f"{command} {err} {when}; what was being written was removed: run the same command again "
        f"(train --resume continues from the newest checkpoint, if any)"
    )


def out_of_memory_message(err: BaseException) -> str:
    """One line for a device that ran out of memory after the start-up check let the step run."""
    detail = " ".join(str(err).split())[:300]
    return (
        f"the device ran out of memory ({detail}); `trm-jax plan --config ... --target local` shows the "
        f"step's memory plan; fewer rows per chunk (--config.optim.microbatches=auto or a larger count), "
        f"--config.model.remat=true, or a lower --config.train.device_memory_gib leave more room"
    )


if __name__ == "__main__":
    sys.exit(main())
