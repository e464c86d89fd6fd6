"""The ``trm-jax`` command (also ``python -m trm_jax``).

Subcommands::

    trm-jax data {sudoku,maze,gen-sudoku,gen-maze,arc} ...      build datasets (trm_jax.data.build)
    trm-jax train --config x [--config.a.b=v ...] --workdir DIR [--resume [--step N]]
    trm-jax evaluate --workdir DIR [--step N]
    trm-jax evaluate --checkpoint DIR/checkpoints --config x
    trm-jax evaluate --torch model.pt --config x    an official PyTorch checkpoint
    trm-jax predict --workdir DIR --puzzle '5.3..7....'        (or --file PUZZLE.txt) [--png OUT.png]
    trm-jax config [x [--config.a.b=v ...]]      list the packaged configs, or print one's keys

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
a scheduler can tell it from a finished run (0).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from trm_jax.fileio import write_json_atomic

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


class UsageError(ValueError):
    """Arguments that do not fit together."""


def _add_model_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", help="a run directory of `trm-jax train` (its config.json and checkpoints)")
    p.add_argument("--checkpoint", help="an orbax checkpoint directory (WORKDIR/checkpoints); needs --config "
                                        "unless WORKDIR/config.json is next to it")
    p.add_argument("--torch", metavar="PATH.pt", help="an official PyTorch state_dict; needs --config")
    p.add_argument("--config", help="a packaged config's name (quickstart, sudoku_mlp, ...) or a config "
                                     "file's path; --config.a.b=v overrides follow")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    p.add_argument("--dataset", help="dataset directory (default: the config's data.dataset_dir)")


OVERRIDES_HELP = ("config overrides: any --config.SECTION.KEY=VALUE after the options sets one value of "
                  "the config (e.g. --config.optim.lr=3e-4 --config.train.progress_bar=false); the value "
                  "takes the type of the current one. `trm-jax config NAME` prints every key and its value; "
                  "`trm-jax config` lists the packaged configs.")


def make_parser() -> argparse.ArgumentParser:
    """The ``trm-jax`` argument parser (``data`` has its own, in :mod:`trm_jax.data.build`)."""
    parser = argparse.ArgumentParser(prog="trm-jax", description="Tiny Recursive Models in JAX.",
                                     epilog=OVERRIDES_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("data", help="build datasets: trm-jax data {sudoku,maze,gen-sudoku,gen-maze,arc} --help",
                   add_help=False)

    p = sub.add_parser("train", help="train a config in a run directory",
                       epilog=OVERRIDES_HELP + " SIGINT/SIGTERM save a checkpoint and exit with status "
                              "128 + the signal number (130, 143); --resume continues the run")
    p.add_argument("--config", help="a packaged config's name (quickstart, sudoku_mlp, sudoku_att, maze, arc1, "
                                    "arc2) or a config file's path; optional with --resume "
                                    "(WORKDIR/config.json)")
    p.add_argument("--workdir", required=True, help="run directory (checkpoints, metrics, plots)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --workdir")
    p.add_argument("--step", type=int, default=None,
                   help="with --resume: continue from this step (no newer step may be in the directory)")

    p = sub.add_parser("config", help="list the packaged configs, or print one config's keys and values",
                       epilog=OVERRIDES_HELP)
    p.add_argument("name", nargs="?", help="a packaged config's name or a config file's path")

    p = sub.add_parser("evaluate", help="evaluate a checkpoint on the test split", epilog=OVERRIDES_HELP)
    _add_model_source(p)
    p.add_argument("--max-batches", type=int, default=0, help="evaluate only this many batches (0: all)")
    p.add_argument("--num-steps", type=int, default=0,
                   help="ACT steps per puzzle (adaptive: the most; 0: halt_max_steps)")
    _add_halting(p)
    p.add_argument("--output", help="also write the metrics to this JSON file")
    p.add_argument("--depth-curve", type=int, default=0, metavar="MAX_STEPS",
                   help="also measure exact accuracy after 1, 2, 4, ... MAX_STEPS test-time supervision "
                        "steps and the learned halting point; writes depth_curve.{json,png} into --workdir "
                        "(or beside --output)")

    p = sub.add_parser("predict", help="solve one Sudoku or maze, print it and write a PNG", epilog=OVERRIDES_HELP)
    _add_model_source(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--puzzle", help="Sudoku: 81 characters, digits and '.' (or 0) for blanks; "
                                       "maze: 900 characters of '# SGo'")
    what.add_argument("--file", help="a text file holding the puzzle (whitespace ignored)")
    p.add_argument("--png", default="prediction.png", help="where to write the picture (default prediction.png)")
    p.add_argument("--num-steps", type=int, default=0, help="ACT steps (adaptive: the most; 0: halt_max_steps)")
    _add_halting(p)
    return parser


def _add_halting(p: argparse.ArgumentParser) -> None:
    p.add_argument("--halting", choices=("fixed", "adaptive"), default="fixed",
                   help="fixed: every puzzle runs --num-steps steps (the official evaluation); adaptive: a "
                        "puzzle stops when its halting head's probability exceeds --threshold (evaluate: "
                        "continuous batching, train.eval_slots rows)")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="adaptive halting: stop when sigmoid(q_halt) > this (default 0.5, the training rule)")


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
    summary = {"step": result.step, "total_steps": result.total_steps, "interrupted": result.interrupted,
               "signal": result.stop_signal.name if result.stop_signal else None}
    summary.update({f"eval/{k}": v for k, v in result.eval_metrics.items()})
    print(json.dumps(summary))
    return 128 + int(result.stop_signal) if result.stop_signal else 0


# ------------------------------------------------------------------------- loading a model


def _require_torch() -> None:
    """Fails with a one-line install hint when the optional PyTorch dependency is missing."""
    try:
        import torch  # noqa: F401, PLC0415 - optional dependency
    except ImportError:
        raise UsageError("--torch needs PyTorch, which is not installed: pip install 'trm-jax[torch]'") from None


def resolve_model(args: argparse.Namespace, overrides: list[str]):
    """(config, model config, optim config, dataset path, state, source) for evaluate/predict.

    ``args`` holds the model-source options (``workdir``, ``checkpoint``, ``torch``, ``config``,
    ``step``, ``dataset``); benchmarks call it with such a namespace too.
    """
    import jax  # noqa: PLC0415

    from trm_jax import configs as configs_lib  # noqa: PLC0415
    from trm_jax.data.format import read_metadata  # noqa: PLC0415
    from trm_jax.train import loop, parallel  # noqa: PLC0415
    from trm_jax.train.checkpoint import Checkpointer  # noqa: PLC0415

    sources = [name for name in ("workdir", "checkpoint", "torch") if getattr(args, name)]
    if len(sources) != 1:
        raise UsageError("give exactly one of --workdir, --checkpoint, --torch")
    if args.torch:
        _require_torch()
    run_config = None
    if args.workdir:
        run_config = configs_lib.config_from_json(Path(args.workdir) / loop.CONFIG_NAME)
        ckpt_dir = Path(args.workdir) / loop.CHECKPOINT_DIR
    elif args.checkpoint:
        ckpt_dir = Path(args.checkpoint)
        beside = ckpt_dir.parent / loop.CONFIG_NAME
        if beside.is_file():
            run_config = configs_lib.config_from_json(beside)
    if args.config:
        config = configs_lib.load_config(args.config, overrides)
        if run_config is not None:  # the carry is sized for the run's batch
            config.optim.global_batch_size = run_config.optim.global_batch_size
    elif run_config is not None:
        config = configs_lib.apply_overrides(run_config, overrides)
    else:
        raise UsageError(f"--{sources[0]} needs --config (the model's config file)")
    if args.dataset:
        config.data.dataset_dir = args.dataset
    configs_lib.validate_config(config)

    data_path = loop.dataset_dir(config, args.workdir or ".")
    metadata = None
    if (data_path / "test" / "dataset.json").is_file():
        metadata = read_metadata(data_path / "test")
    elif any(config.model[name] == 0 for name in configs_lib.DATASET_FIELDS):
        raise loop.RunDirError(f"dataset directory {data_path} does not exist (needed for the model's "
                               f"{', '.join(configs_lib.DATASET_FIELDS)})")
    model_config = configs_lib.model_config(config, metadata)
    optim_config = configs_lib.optim_config(config, total_steps=1)  # the schedule is unused here
    mesh = parallel.make_mesh()

    if args.torch:
        from trm_jax.interop import load_torch_checkpoint  # noqa: PLC0415
        variables = load_torch_checkpoint(args.torch, model_config)
        state = parallel.create_sharded_train_state(model_config, optim_config, jax.random.key(0), mesh,
                                                    variables=variables)
        return config, model_config, optim_config, data_path, state, f"PyTorch checkpoint {args.torch}"
    if not ckpt_dir.is_dir():
        raise loop.RunDirError(f"checkpoint directory {ckpt_dir} does not exist")
    checkpointer = Checkpointer(ckpt_dir, max_to_keep=None, async_save=False)
    try:
        state, _ = loop.restore_checkpoint(checkpointer, model_config, optim_config, mesh, args.step)
        step = args.step if args.step is not None else checkpointer.latest_step()
    finally:
        checkpointer.close()
    return config, model_config, optim_config, data_path, state, f"{ckpt_dir} step {step}"


# ------------------------------------------------------------------------------- evaluate


def _halting(args: argparse.Namespace):
    """The --halting / --threshold / --num-steps policy (a bad combination is a UsageError)."""
    from trm_jax.inference import HaltingPolicy  # noqa: PLC0415

    try:
        return HaltingPolicy(args.halting, args.num_steps, args.threshold)
    except ValueError as err:
        raise UsageError(str(err)) from None


def _evaluate(args: argparse.Namespace, overrides: list[str]) -> int:
    from trm_jax.train import loop, parallel  # noqa: PLC0415
    from trm_jax.train.evaluation import make_eval_fn  # noqa: PLC0415

    config, model_config, optim_config, data_path, state, source = resolve_model(args, overrides)
    if args.max_batches:
        config.train.eval_max_batches = args.max_batches
    if not (data_path / "test" / "dataset.json").is_file():
        raise loop.RunDirError(f"dataset directory {data_path} does not exist (no test/dataset.json)")
    mesh = parallel.make_mesh()
    eval_fn = make_eval_fn(config, model_config, optim_config, mesh, state, _halting(args))
    eval_loader = loop.make_eval_loader(config, data_path)
    arc = loop.make_arc_evaluator(config, data_path)
    step = int(state.step)
    out_dir = Path(args.workdir) if args.workdir else None
    metrics = loop.run_evaluation(config, state, eval_fn, eval_loader, step=step, out_dir=out_dir,
                                  arc_evaluator=arc)
    result = {"source": source, "dataset": str(data_path), **metrics}
    if args.depth_curve:
        result["depth_curve"] = _depth_curve(args, config, model_config, optim_config, state, eval_loader,
                                             mesh, source)
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        write_json_atomic(args.output, result)
    return 0


def _depth_curve(args: argparse.Namespace, config, model_config, optim_config, state, eval_loader, mesh,
                 source: str) -> dict:
    from trm_jax.train import depth_curve as depth  # noqa: PLC0415

    if args.depth_curve < 1:
        raise UsageError(f"--depth-curve {args.depth_curve}: expected a number of steps >= 1")
    curve = depth.depth_curve(model_config, state.variables(use_ema=optim_config.ema), eval_loader,
                              args.depth_curve, mesh)
    out_dir = Path(args.workdir) if args.workdir else Path(args.output).parent if args.output else None
    if out_dir is not None:
        depth.save_depth_curve(curve, out_dir, title=source)
    print(f"depth curve: {curve.summary()}", file=sys.stderr, flush=True)
    return curve.to_dict()


# -------------------------------------------------------------------------------- predict


def _read_puzzle(args: argparse.Namespace) -> str:
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            raise UsageError(f"puzzle file {path} does not exist")
        text = path.read_text()
    else:
        text = args.puzzle
    return text


def parse_sudoku(text: str) -> np.ndarray:
    """81 cells (digits, '.' or '0' blank; whitespace and grid lines '|', '-', '+' ignored) -> [81] tokens."""
    cells = [ch for ch in text if ch not in " \t\r\n|-+"]
    if len(cells) != 81:
        raise UsageError(f"a Sudoku needs 81 cells, got {len(cells)}")
    bad = [ch for ch in cells if ch not in ".0123456789"]
    if bad:
        raise UsageError(f"Sudoku cell {bad[0]!r}: expected a digit 1-9 or '.'/'0' for a blank")
    digits = np.array([0 if ch in ".0" else int(ch) for ch in cells], np.int32)
    return digits + 1  # dataset tokens: blank 1, digit d -> d + 1


def parse_maze(text: str, side: int) -> np.ndarray:
    """side*side characters of '# SGo' (line breaks ignored) -> tokens 1..5."""
    from trm_jax.data.maze import encode_maze  # noqa: PLC0415

    cells = "".join(line for line in text.replace("\r", "").split("\n"))
    if len(cells) != side * side:
        raise UsageError(f"a {side}x{side} maze needs {side * side} characters, got {len(cells)}")
    try:
        return encode_maze(cells).astype(np.int32)
    except ValueError as err:
        raise UsageError(f"maze: {err}") from None


def _predict(args: argparse.Namespace, overrides: list[str]) -> int:
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    from trm_jax.data import render  # noqa: PLC0415
    from trm_jax.inference import make_solver  # noqa: PLC0415

    config, model_config, optim_config, _, state, source = resolve_model(args, overrides)
    text = _read_puzzle(args)
    if model_config.seq_len == 81 and model_config.vocab_size == 11:
        kind, tokens = "sudoku", parse_sudoku(text)
    elif model_config.seq_len == 900 and model_config.vocab_size == 6:
        kind, tokens = "maze", parse_maze(text, 30)
    else:
        raise UsageError(f"predict handles Sudoku (seq 81, vocab 11) and maze (seq 900, vocab 6) models; "
                         f"this one has seq_len {model_config.seq_len}, vocab {model_config.vocab_size}")
    puzzle = {"inputs": jnp.asarray(tokens[None]), "puzzle_identifiers": jnp.zeros((1,), jnp.int32)}
    variables = jax.device_get(state.variables(use_ema=optim_config.ema))
    policy = _halting(args)
    result = make_solver(model_config, num_slots=1, policy=policy)(variables, puzzle)
    pred = np.asarray(result["preds"])[0]
    confidence = float(jax.nn.sigmoid(result["q_halt_logits"][0]))
    steps = f"{int(result['steps'][0])} supervision step(s) ({policy.mode} halting, at most {policy.cap(model_config)})"

    if kind == "sudoku":
        from trm_jax.data.sudoku import is_valid_solution  # noqa: PLC0415
        grid = np.clip(pred - 1, 0, 9).reshape(9, 9)
        given = (tokens - 1).reshape(9, 9)
        valid = bool(is_valid_solution(grid)) and bool(np.all((given == 0) | (grid == given)))
        for r in range(9):
            row = " ".join(str(d) for d in grid[r])
            print(" | ".join(row[i:i + 6].strip() for i in range(0, 18, 6)))
            if r in (2, 5):
                print("------+-------+------")
        print(f"valid solution: {'yes' if valid else 'no'}; model confidence (sigmoid q_halt): {confidence:.3f}; "
              f"{steps}")
        fig = render.render_sudoku(tokens, prediction=pred, title=f"TRM ({'valid' if valid else 'invalid'})")
    else:
        from trm_jax.data.maze import decode_maze  # noqa: PLC0415
        out = decode_maze(pred)
        for r in range(30):
            print(out[r * 30:(r + 1) * 30])
        print(f"model confidence (sigmoid q_halt): {confidence:.3f}; {steps}")
        fig = render.render_maze(tokens, prediction=pred)
    path = render.save_png(fig, args.png)
    print(f"model: {source}; picture: {path}")
    return 0


# ----------------------------------------------------------------------------------- main


def _bad_input_errors() -> tuple[type[BaseException], ...]:
    from trm_jax.config import ConfigError  # noqa: PLC0415
    from trm_jax.configs import ConfigLoadError  # noqa: PLC0415
    from trm_jax.data.format import DatasetFormatError  # noqa: PLC0415
    from trm_jax.interop import CheckpointMismatchError as TorchMismatch  # noqa: PLC0415
    from trm_jax.train.checkpoint import CheckpointDamagedError, CheckpointMismatchError  # noqa: PLC0415
    from trm_jax.train.loop import RunDirError  # noqa: PLC0415

    return (UsageError, ConfigError, ConfigLoadError, DatasetFormatError, TorchMismatch,
            CheckpointMismatchError, CheckpointDamagedError, RunDirError, FileNotFoundError)


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
            return (f"{head}; older steps that look intact: {', '.join(map(str, older))}. To continue from step "
                    f"{older[-1]}, move the damaged step aside (mv {err.step_dir} {err.step_dir}.damaged) and run "
                    f"train --resume again")
        return f"{head}; no older step to continue from: start a new run in another --workdir"
    if older:
        return (f"{head}; older steps that look intact: {', '.join(map(str, older))}; "
                f"use one with --step {older[-1]}")
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
    commands = {"train": _train, "evaluate": _evaluate, "predict": _predict, "config": _config}
    bad_input = _bad_input_errors()
    from trm_jax.train.loop import TrainingError  # noqa: PLC0415
    try:
        return commands[args.command](args, _split_overrides(rest))
    except bad_input as err:
        print(f"error: {_one_line(err, args.command)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrainingError as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
