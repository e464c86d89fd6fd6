"""A non-editable install has the experiment configs: ``pip install .`` into a fresh venv, then
``trm-jax train --config quickstart`` from another directory, and ``--resume`` from a third."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
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
    "--config.optim.total_steps=2",
    "--config.train.eval_every_steps=2",
    "--config.train.eval_batch_size=4",
    "--config.train.progress_bar=false",
    "--config.train.tensorboard=false",
    "--config.data.generate.kind=",
]


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.slow
def test_installed_package_trains_a_named_config_from_another_directory(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("needs git to copy the checkout")
    # A copy of the tracked and new files only (no build/ or egg-info of the editable install).
    source = tmp_path / "src"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    venv = tmp_path / "venv"
    # The system site-packages provide the dependencies, pip and setuptools (nothing is
    # downloaded; without --without-pip, Python < 3.12 would put an older setuptools into the
    # venv); trm-jax itself is installed into the venv, which shadows any editable install.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python, trm = venv / "bin" / "python", venv / "bin" / "trm-jax"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PIP_NO_INDEX"] = "1"
    _run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", str(source)],
        tmp_path,
        env,
    )
    shutil.rmtree(source)  # nothing may be read from the source tree afterwards
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run([str(python), "-c", "import trm_jax; print(trm_jax.__file__)"], elsewhere, env)
    assert str(venv) in where, where

    data = elsewhere / "data"
    _run(
        [
            str(trm),
            "data",
            "sudoku",
            "data",
            "--source",
            str(ROOT / "tests" / "data" / "sudoku_small"),
            "--num-aug",
            "1",
        ],
        elsewhere,
        env,
    )
    out = _run(
        [str(trm), "train", "--config", "quickstart", *TINY, "--config.data.dataset_dir=data", "--workdir", "run"],
        elsewhere,
        env,
    )
    assert json.loads(out.strip().splitlines()[-1])["step"] == 2

    # Resumed from another directory, the run still finds the dataset it was started with:
    # the trainer stores the dataset path resolved in WORKDIR/config.json.
    stored = json.loads((elsewhere / "run" / "config.json").read_text())["data"]["dataset_dir"]
    assert os.path.isabs(stored), stored
    third = tmp_path / "third"
    third.mkdir()
    out = _run(
        [str(trm), "train", "--resume", "--workdir", str(elsewhere / "run"), "--config.optim.total_steps=3"], third, env
    )
    assert json.loads(out.strip().splitlines()[-1])["step"] == 3
    assert data.is_dir()
