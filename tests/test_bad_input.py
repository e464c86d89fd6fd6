"""Every failure a user can cause ends cleanly: exit status 2, one ``error:`` line, nothing written.

Damaged checkpoints are made by training a tiny run (checkpoints at steps 2 and 4) and then
truncating, garbling or deleting files of step 4 as orbax 0.12 lays them out::

    checkpoints/<step>/{state,extras,meta}/         one directory per item
    checkpoints/<step>/state/manifest.ocdbt          OCDBT manifest
    checkpoints/<step>/state/_METADATA               the tree's JSON metadata
    checkpoints/<step>/state/ocdbt.process_0/d/...   the arrays' data files
    checkpoints/<step>/extras/metadata               the extras' JSON
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Callable

import pytest

from test_cli import SUDOKU_CSV, TINY
from trm_jax import cli
from trm_jax import configs as configs_lib
from trm_jax.config import ConfigError
from trm_jax.data.sudoku import build_sudoku_dataset
from trm_jax.train.checkpoint import Checkpointer

RUN_ARGS = [a.replace("eval_every_steps=4", "eval_every_steps=2") for a in TINY]  # steps 2 and 4


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    """(dataset, workdir) of a 4-step tiny run with checkpoints at steps 2 and 4."""
    root = tmp_path_factory.mktemp("bad_input")
    dataset = build_sudoku_dataset(root / "sudoku", source_dir=SUDOKU_CSV, hub_repo=None, num_aug=3)
    workdir = root / "run"
    assert (
        cli.main(
            [
                "train",
                "--config",
                "quickstart",
                *RUN_ARGS,
                f"--config.data.dataset_dir={dataset}",
                "--workdir",
                str(workdir),
            ]
        )
        == 0
    )
    with Checkpointer(workdir / "checkpoints") as ckpt:
        assert ckpt.all_steps() == [2, 4]
    return dataset, workdir


def snapshot(root: Path) -> dict[str, tuple[bool, int, int]]:
    """Every path under ``root`` with (is_dir, size, mtime_ns): what "nothing was written" compares."""
    out = {}
    for path in sorted(root.rglob("*")):
        stat = path.stat()
        out[str(path.relative_to(root))] = (path.is_dir(), stat.st_size if path.is_file() else 0, stat.st_mtime_ns)
    return out


def bad_input(capsys, argv: list[str]) -> str:
    """Runs the CLI expecting status 2 and exactly one stderr line starting with ``error: ``."""
    capsys.readouterr()
    assert cli.main(argv) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


# --------------------------------------------------------------------------- damaged checkpoints


def _data_files(step_dir: Path) -> list[Path]:
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files, f"no ocdbt data files under {step_dir} (has orbax's layout changed?)"
    return files


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _truncate_data(step_dir: Path) -> None:
    for path in _data_files(step_dir):
        _truncate(path)


def _garble_data(step_dir: Path) -> None:
    for path in _data_files(step_dir):
        data = bytearray(path.read_bytes())
        data[:64] = bytes(b ^ 0xFF for b in data[:64])
        path.write_bytes(bytes(data))


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    # The storage layer's status code: the line shortens a long message in its middle, so a
    # phrase from there ("Error reading ...") may be cut out when the paths are long.
    "truncated data files": (_truncate_data, "OUT_OF_RANGE"),
    "garbled data files": (_garble_data, "DATA_LOSS"),
    "missing state directory": (lambda d: shutil.rmtree(d / "state"), "its item directory state/ is missing"),
    "truncated manifest": (lambda d: _truncate(d / "state" / "manifest.ocdbt"), "manifest"),
    "truncated tree metadata": (lambda d: _truncate(d / "state" / "_METADATA"), "malformed JSON"),
    "bad extras JSON": (lambda d: (d / "extras" / "metadata").write_text("{not json"), "malformed JSON"),
    "extras not an object": (
        lambda d: (d / "extras" / "metadata").write_text("[1, 2]"),
        "extras/ holds list, expected a JSON object",
    ),
}


@pytest.fixture
def damaged(run, tmp_path, request) -> tuple[Path, Path, str]:
    """(dataset, a copy of the run whose step 4 is damaged as named by the param, expected reason)."""
    dataset, workdir = run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    damage, reason = DAMAGE[request.param]
    damage(copy / "checkpoints" / "4")
    return dataset, copy, reason


@pytest.mark.parametrize("damaged", list(DAMAGE), indirect=True)
def test_evaluate_damaged_checkpoint(damaged, capsys):
    dataset, workdir, reason = damaged
    before = snapshot(workdir)
    err = bad_input(capsys, ["evaluate", "--workdir", str(workdir), f"--config.data.dataset_dir={dataset}"])
    assert f"checkpoint step 4 in {workdir / 'checkpoints'} is damaged" in err and reason in err
    assert "older steps that look intact: 2; use one with --step 2" in err
    assert snapshot(workdir) == before
    # The advice works: the older step evaluates.
    assert cli.main(["evaluate", "--workdir", str(workdir), "--step", "2", f"--config.data.dataset_dir={dataset}"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 3


@pytest.mark.parametrize("damaged", ["truncated data files", "bad extras JSON"], indirect=True)
def test_resume_damaged_checkpoint(damaged, capsys):
    dataset, workdir, reason = damaged
    before = snapshot(workdir)
    ckpt = workdir / "checkpoints"
    argv = [
        "train",
        "--resume",
        "--workdir",
        str(workdir),
        f"--config.data.dataset_dir={dataset}",
        "--config.optim.total_steps=6",
    ]
    err = bad_input(capsys, argv)
    assert f"checkpoint step 4 in {ckpt} is damaged" in err and reason in err
    assert f"mv {ckpt / '4'} {ckpt / '4'}.damaged" in err and "continue from step 2" in err
    assert snapshot(workdir) == before

    # --step 2 while the damaged step 4 is still there: refused (later saves would meet it).
    err = bad_input(capsys, [*argv, "--step", "2"])
    assert "newer step(s) 4" in err and f"mv {ckpt / '4'} {ckpt / '4'}.aside" in err
    assert snapshot(workdir) == before

    # Following the advice resumes from step 2; the damaged directory is left as the user moved it.
    (ckpt / "4").rename(ckpt / "4.damaged")
    assert cli.main([*argv, "--step", "2"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 6
    assert (ckpt / "4.damaged").is_dir()
    with Checkpointer(ckpt) as checkpointer:
        assert checkpointer.all_steps()[-1] == 6


def test_resume_step_usage(run, capsys, tmp_path):
    dataset, workdir = run
    before = snapshot(workdir)
    err = bad_input(capsys, ["train", "--workdir", str(tmp_path / "w"), "--config", "quickstart", *TINY, "--step", "2"])
    assert "--step needs --resume" in err
    err = bad_input(
        capsys, ["train", "--resume", "--workdir", str(workdir), "--step", "3", f"--config.data.dataset_dir={dataset}"]
    )
    assert "no checkpoint for step 3" in err and "steps there: 2, 4" in err
    assert snapshot(workdir) == before and not (tmp_path / "w").exists()


# ------------------------------------------------------------------------------ dataset paths


def test_dataset_dir_that_is_not_a_dataset(capsys, tmp_path):
    not_a_dataset = tmp_path / "notes"
    not_a_dataset.mkdir()
    (not_a_dataset / "readme.txt").write_text("mine")
    before = snapshot(tmp_path)
    err = bad_input(
        capsys,
        [
            "train",
            "--config",
            "quickstart",
            *TINY,
            "--config.data.generate.kind=sudoku",
            "--config.data.generate.num_train=2",
            "--config.data.generate.num_test=1",
            f"--config.data.dataset_dir={not_a_dataset}",
            "--workdir",
            str(tmp_path / "w"),
        ],
    )
    assert f"{not_a_dataset} exists but holds no train/dataset.json" in err
    assert "remove it, or point config.data.dataset_dir elsewhere" in err
    assert snapshot(tmp_path) == before  # no workdir, nothing generated next to the directory


# ------------------------------------------------------------------------- optional packages


def test_evaluate_torch_without_torch(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    (tmp_path / "model.pt").write_bytes(b"x")
    before = snapshot(tmp_path)
    err = bad_input(capsys, ["evaluate", "--torch", str(tmp_path / "model.pt"), "--config", "quickstart", *TINY])
    assert "pip install 'trm-jax[torch]'" in err
    assert snapshot(tmp_path) == before


def test_data_from_hub_without_huggingface_hub(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    err = bad_input(capsys, ["data", "sudoku", str(tmp_path / "ds"), "--hub-repo", "someone/sudoku"])
    assert "pip install 'trm-jax[hub]'" in err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ trm-jax data


def test_data_existing_output(capsys, tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep").write_text("x")
    before = snapshot(tmp_path)
    err = bad_input(capsys, ["data", "sudoku", str(out), "--source", str(SUDOKU_CSV)])
    assert f"{out}: output directory already exists; pass --overwrite to replace it" in err
    assert "overwrite=True" not in err
    assert snapshot(tmp_path) == before


def test_data_missing_source(capsys, tmp_path):
    err = bad_input(capsys, ["data", "maze", str(tmp_path / "ds"), "--source", str(tmp_path / "nowhere")])
    assert "train.csv: missing" in err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------- config validation


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.optim.total_steps=-1", "config.optim.total_steps=-1: expected an integer >= 0"),
        ("--config.optim.lr_warmup_steps=-5", "config.optim.lr_warmup_steps=-5: expected >= 0"),
        ("--config.model.hidden_size=0", "config.model.hidden_size=0: expected a positive integer"),
        ("--config.train.parallel=pjit", "config.train.parallel='pjit': expected one of ('jit', 'pmap')"),
        ("--config.data.evaluator=sudoku", "config.data.evaluator='sudoku': expected one of ('', 'arc')"),
        ("--config.data.generate.kind=kakuro", "config.data.generate.kind='kakuro': expected one of"),
        ("--config.train.log_every=0", "config.train.log_every=0: expected a positive integer"),
        ("--config.data.generate.num_train=0", "config.data.generate.num_train=0: expected a positive integer"),
    ],
)
def test_config_checked_before_anything(capsys, tmp_path, override, message):
    # A generate spec: without the up-front check the dataset would be generated first.
    err = bad_input(
        capsys,
        [
            "train",
            "--config",
            "quickstart",
            *TINY,
            "--config.data.generate.kind=sudoku",
            "--config.data.generate.num_train=2",
            "--config.data.generate.num_test=1",
            override,
            "--workdir",
            str(tmp_path / "w"),
        ],
    )
    assert message in err
    assert list(tmp_path.iterdir()) == []


def test_evaluate_checks_the_config(run, capsys):
    _, workdir = run
    err = bad_input(capsys, ["evaluate", "--workdir", str(workdir), "--config.train.eval_batch_size=-1"])
    assert "config.train.eval_batch_size=-1: expected an integer >= 0" in err


def test_validate_config_device_count():
    config = configs_lib.load_config("quickstart", {"optim.global_batch_size": 10})
    configs_lib.validate_config(config, device_count=2)
    with pytest.raises(ConfigError, match=r"config.optim.global_batch_size=10: expected a multiple of the 4 devices"):
        configs_lib.validate_config(config, device_count=4)
