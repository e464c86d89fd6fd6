"""The trm-jax command line, in process: train/evaluate/predict/data and bad input (exit 2, one line)."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from trm_jax import cli
from trm_jax.data.sudoku import build_sudoku_dataset
from trm_jax.train.checkpoint import Checkpointer

SUDOKU_CSV = Path(__file__).parent / "data" / "sudoku_small"
TINY = [
    "--config.model.hidden_size=16",
    "--config.model.num_heads=2",
    "--config.model.expansion=1",
    "--config.model.H_cycles=1",
    "--config.model.L_cycles=1",
    "--config.model.L_layers=1",
    "--config.model.halt_max_steps=2",
    "--config.model.puzzle_emb_ndim=16",
    "--config.model.puzzle_emb_len=1",
    "--config.optim.global_batch_size=4",
    "--config.optim.total_steps=4",
    "--config.train.eval_every_steps=4",
    "--config.train.eval_batch_size=4",
    "--config.train.progress_bar=false",
    "--config.train.tensorboard=false",
    "--config.data.generate.kind=",
]
PUZZLE = "..3.2.6..9..3.5..1..18.64....81.29..7.......8..67.82....26.95..8..2.3..9..5.1.3.."


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    """(dataset, workdir) of a 4-step tiny run trained through the CLI."""
    root = tmp_path_factory.mktemp("cli")
    dataset = build_sudoku_dataset(root / "sudoku", source_dir=SUDOKU_CSV, hub_repo=None, num_aug=3)
    workdir = root / "run"
    rc = cli.main(
        ["train", "--config", "quickstart", *TINY, f"--config.data.dataset_dir={dataset}", "--workdir", str(workdir)]
    )
    assert rc == 0
    return dataset, workdir


def bad_input(capsys, argv) -> str:
    assert cli.main(argv) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_unknown_config_key(capsys, tmp_path):
    err = bad_input(
        capsys, ["train", "--config", "quickstart", "--config.model.hiden_size=8", "--workdir", str(tmp_path / "w")]
    )
    assert "config.model.hiden_size" in err
    assert not (tmp_path / "w").exists()


def test_unrecognised_argument(capsys, tmp_path):
    err = bad_input(capsys, ["train", "--config", "quickstart", "--lr=1", "--workdir", str(tmp_path)])
    assert "'--lr=1'" in err


def test_missing_dataset_directory(capsys, tmp_path):
    err = bad_input(
        capsys,
        [
            "train",
            "--config",
            "sudoku_mlp",
            "--config.data.dataset_dir=/nonexistent/sudoku",
            "--workdir",
            str(tmp_path / "w"),
        ],
    )
    assert "/nonexistent/sudoku does not exist" in err
    assert not (tmp_path / "w").exists()


def test_evaluate_workdir(run, capsys):
    _, workdir = run
    assert cli.main(["evaluate", "--workdir", str(workdir)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["count"] == 3 and 0.0 <= result["accuracy"] <= 1.0


def test_finished_run_has_a_depth_curve_and_evaluate_remeasures_it(run, capsys):
    _, workdir = run
    written = json.loads((workdir / "depth_curve.json").read_text())  # the quickstart config asks for one
    assert written["num_puzzles"] == 3 and written["halt_max_steps"] == 2
    assert (workdir / "depth_curve.png").stat().st_size > 0
    out = workdir / "eval.json"
    assert cli.main(["evaluate", "--workdir", str(workdir), "--depth-curve", "3", "--output", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["depth_curve"]["steps"] == [1, 2, 3]
    assert json.loads(out.read_text()) == result
    again = json.loads((workdir / "depth_curve.json").read_text())
    # The same weights and puzzles: the depths both measured agree.
    assert again["exact_accuracy"][:2] == written["exact_accuracy"][:2]
    assert cli.main(["evaluate", "--workdir", str(workdir), "--depth-curve", "-1"]) == cli.EXIT_BAD_INPUT


def test_checkpoint_from_another_architecture(run, capsys):
    dataset, workdir = run
    config_before = (workdir / "config.json").read_text()
    wide = [
        a.replace("hidden_size=16", "hidden_size=32").replace("puzzle_emb_ndim=16", "puzzle_emb_ndim=32") for a in TINY
    ]
    err = bad_input(
        capsys,
        [
            "evaluate",
            "--checkpoint",
            str(workdir / "checkpoints"),
            "--config",
            "quickstart",
            *wide,
            f"--config.data.dataset_dir={dataset}",
        ],
    )
    assert "different architecture" in err
    # Resuming the run with another architecture: refused before anything is written.
    err = bad_input(
        capsys,
        [
            "train",
            "--resume",
            "--workdir",
            str(workdir),
            "--config",
            "quickstart",
            *wide,
            "--config.optim.total_steps=8",
            f"--config.data.dataset_dir={dataset}",
        ],
    )
    assert "different architecture" in err
    assert (workdir / "config.json").read_text() == config_before
    with Checkpointer(workdir / "checkpoints") as ckpt:
        assert ckpt.all_steps() == [4]


def test_evaluate_torch_checkpoint_matches(run, capsys, tmp_path):
    pytest.importorskip("torch")
    from trm_jax.interop import save_torch_checkpoint

    dataset, workdir = run
    with Checkpointer(workdir / "checkpoints") as ckpt:
        state, _ = ckpt.restore()
    variables = {"params": state["ema"], "buffers": state["buffers"]}
    save_torch_checkpoint(jax.tree_util.tree_map(np.asarray, variables), tmp_path / "model.pt")
    assert cli.main(["evaluate", "--workdir", str(workdir)]) == 0
    ours = json.loads(capsys.readouterr().out)
    assert (
        cli.main(
            [
                "evaluate",
                "--torch",
                str(tmp_path / "model.pt"),
                "--config",
                "quickstart",
                *TINY,
                f"--config.data.dataset_dir={dataset}",
            ]
        )
        == 0
    )
    theirs = json.loads(capsys.readouterr().out)
    for key in ("accuracy", "exact_accuracy", "lm_loss", "count"):
        assert theirs[key] == pytest.approx(ours[key], rel=1e-6), key


def test_predict_sudoku(run, capsys, tmp_path):
    _, workdir = run
    png = tmp_path / "out.png"
    assert cli.main(["predict", "--workdir", str(workdir), "--puzzle", PUZZLE, "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "valid solution:" in out and png.stat().st_size > 0
    rows = [line for line in out.splitlines() if line.count("|") == 2]
    assert len(rows) == 9
    puzzle_file = tmp_path / "puzzle.txt"
    puzzle_file.write_text("\n".join(PUZZLE[i : i + 9] for i in range(0, 81, 9)))
    assert cli.main(["predict", "--workdir", str(workdir), "--file", str(puzzle_file), "--png", str(png)]) == 0


def test_predict_with_adaptive_halting_reports_the_steps(run, capsys, tmp_path):
    _, workdir = run
    assert (
        cli.main(
            [
                "predict",
                "--workdir",
                str(workdir),
                "--puzzle",
                PUZZLE,
                "--png",
                str(tmp_path / "p.png"),
                "--halting",
                "adaptive",
                "--threshold",
                "0.9",
                "--num-steps",
                "5",
            ]
        )
        == 0
    )
    assert "supervision step(s) (adaptive halting, at most 5)" in capsys.readouterr().out
    err = bad_input(
        capsys,
        ["predict", "--workdir", str(workdir), "--puzzle", PUZZLE, "--halting", "adaptive", "--threshold", "1.5"],
    )
    assert "threshold=1.5" in err


def test_evaluate_adaptive_that_never_halts_equals_fixed(run, capsys):
    """Adaptive evaluation with continuous batching (2 slots for the 3 test puzzles) and a threshold
    that never fires gives the fixed evaluation's metrics; with the training rule it runs too."""
    _, workdir = run
    assert cli.main(["evaluate", "--workdir", str(workdir)]) == 0
    fixed = json.loads(capsys.readouterr().out)
    assert (
        cli.main(
            [
                "evaluate",
                "--workdir",
                str(workdir),
                "--halting",
                "adaptive",
                "--threshold",
                "1",
                "--config.train.eval_slots=2",
            ]
        )
        == 0
    )
    never = json.loads(capsys.readouterr().out)
    assert never["halted_early"] == 0.0
    for key in ("count", "accuracy", "exact_accuracy", "steps", "q_halt_accuracy"):
        assert never[key] == pytest.approx(fixed[key], rel=1e-6), key
    # float32: 2 slots instead of a batch of 4 change the matmul shapes (rounding of O(1) losses).
    assert never["lm_loss"] == pytest.approx(fixed["lm_loss"], rel=1e-4)
    assert cli.main(["evaluate", "--workdir", str(workdir), "--halting", "adaptive"]) == 0
    adaptive = json.loads(capsys.readouterr().out)
    assert 1.0 <= adaptive["steps"] <= fixed["steps"] and adaptive["count"] == 3


def test_evaluate_and_predict_with_noisy_trajectories(run, capsys, tmp_path):
    """--trajectories K --noise SIGMA: the trajectories' summary (both rules, the oracle, the
    agreement, the steps of all trajectories); one trajectory without noise is the plain
    evaluation; predict says how many trajectories agreed; bad values are one error line."""
    _, workdir = run
    assert cli.main(["evaluate", "--workdir", str(workdir)]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert (
        cli.main(["evaluate", "--workdir", str(workdir), "--trajectories", "1", "--noise", "0", "--select", "vote"])
        == 0
    )
    assert json.loads(capsys.readouterr().out) == plain
    argv = [
        "evaluate",
        "--workdir",
        str(workdir),
        "--trajectories",
        "3",
        "--noise",
        "0.5",
        "--config.train.eval_slots=2",
    ]
    assert cli.main(argv) == 0
    noisy = json.loads(capsys.readouterr().out)
    assert cli.main(argv) == 0
    assert json.loads(capsys.readouterr().out) == noisy  # the seed makes it repeatable
    assert noisy["count"] == plain["count"] and noisy["exact_accuracy"] == noisy["exact_qhalt"]
    assert noisy["oracle_exact"] >= max(noisy["exact_qhalt"], noisy["exact_vote"])
    assert 1.0 <= noisy["agreement"] <= 3.0 and noisy["trajectory_steps"] == pytest.approx(3 * noisy["steps"])
    assert (
        cli.main(
            [
                "predict",
                "--workdir",
                str(workdir),
                "--puzzle",
                PUZZLE,
                "--png",
                str(tmp_path / "p.png"),
                "--trajectories",
                "4",
                "--noise",
                "0.5",
                "--select",
                "vote",
            ]
        )
        == 0
    )
    assert "of 4 trajectories (noise 0.5) reached this answer, chosen by vote" in capsys.readouterr().out
    err = bad_input(capsys, ["evaluate", "--workdir", str(workdir), "--trajectories", "0"])
    assert "--trajectories 0: expected >= 1" in err
    err = bad_input(capsys, ["predict", "--workdir", str(workdir), "--puzzle", PUZZLE, "--noise", "-1"])
    assert "--noise -1" in err


@pytest.mark.parametrize("puzzle, message", [(PUZZLE[:80], "needs 81 cells, got 80"), (PUZZLE[:80] + "x", "cell 'x'")])
def test_predict_bad_puzzle(run, capsys, tmp_path, puzzle, message):
    _, workdir = run
    err = bad_input(
        capsys, ["predict", "--workdir", str(workdir), "--puzzle", puzzle, "--png", str(tmp_path / "p.png")]
    )
    assert message in err and not (tmp_path / "p.png").exists()


def test_evaluate_needs_a_model_source(capsys):
    err = bad_input(capsys, ["evaluate", "--config", "quickstart"])
    assert "exactly one of --workdir, --checkpoint, --torch" in err


def test_data_forwards_to_the_builders(tmp_path, capsys):
    assert cli.main(["data", "gen-sudoku", str(tmp_path / "csv"), "--num-train", "2", "--num-test", "1"]) == 0
    assert (tmp_path / "csv" / "train.csv").is_file()


def test_config_command_lists_and_prints(capsys):
    assert cli.main(["config"]) == 0
    assert {"quickstart", "sudoku_mlp", "arc1"} <= set(capsys.readouterr().out.split())
    assert cli.main(["config", "quickstart", "--config.optim.lr=0.5"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["optim"]["lr"] == 0.5 and printed["model"]["mlp_t"] is True


def test_train_help_explains_overrides(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--config.SECTION.KEY=VALUE" in out and "trm-jax config NAME" in out
