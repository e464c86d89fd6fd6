"""``trm-jax predict``: solve one Sudoku or maze given as text, print it and draw it."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from trm_jax.cli.errors import UsageError
from trm_jax.cli.model_source import resolve_model
from trm_jax.cli.parser import halting_policy, trajectory_sampling


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


def predict(args: argparse.Namespace, overrides: list[str]) -> int:
    """Solves the puzzle of ``args`` with the model of ``args``; prints the grid and writes a PNG."""
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
        raise UsageError(
            f"predict handles Sudoku (seq 81, vocab 11) and maze (seq 900, vocab 6) models; "
            f"this one has seq_len {model_config.seq_len}, vocab {model_config.vocab_size}"
        )
    puzzle = {"inputs": jnp.asarray(tokens[None]), "puzzle_identifiers": jnp.zeros((1,), jnp.int32)}
    variables = jax.device_get(state.variables(use_ema=optim_config.ema))
    policy, sampling = halting_policy(args), trajectory_sampling(args)
    solver = make_solver(model_config, num_slots=sampling.trajectories, policy=policy, sampling=sampling)
    key = (jax.random.key(args.seed),) if sampling.noise > 0.0 else ()
    result = solver(variables, puzzle, *key)
    pred = np.asarray(result["preds"])[0]
    confidence = float(jax.nn.sigmoid(result["q_halt_logits"][0]))
    steps = f"{int(result['steps'][0])} supervision step(s) ({policy.mode} halting, at most {policy.cap(model_config)})"
    if not sampling.is_plain:
        steps += (
            f"; {int(result['agreement'][0])} of {sampling.trajectories} trajectories (noise "
            f"{sampling.noise:g}) reached this answer, chosen by {sampling.select}"
        )

    if kind == "sudoku":
        from trm_jax.data.sudoku import is_valid_solution  # noqa: PLC0415

        grid = np.clip(pred - 1, 0, 9).reshape(9, 9)
        given = (tokens - 1).reshape(9, 9)
        valid = bool(is_valid_solution(grid)) and bool(np.all((given == 0) | (grid == given)))
        for r in range(9):
            row = " ".join(str(d) for d in grid[r])
            print(" | ".join(row[i : i + 6].strip() for i in range(0, 18, 6)))
            if r in (2, 5):
                print("------+-------+------")
        print(
            f"valid solution: {'yes' if valid else 'no'}; model confidence (sigmoid q_halt): {confidence:.3f}; {steps}"
        )
        fig = render.render_sudoku(tokens, prediction=pred, title=f"TRM ({'valid' if valid else 'invalid'})")
    else:
        from trm_jax.data.maze import decode_maze  # noqa: PLC0415

        out = decode_maze(pred)
        for r in range(30):
            print(out[r * 30 : (r + 1) * 30])
        print(f"model confidence (sigmoid q_halt): {confidence:.3f}; {steps}")
        fig = render.render_maze(tokens, prediction=pred)
    path = render.save_png(fig, args.png)
    print(f"model: {source}; picture: {path}")
    return 0
