"""End to end, as a user runs it: build generated data, train, SIGTERM mid-run, resume, finish, evaluate."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from trm_jax import cli
from trm_jax.train.checkpoint import Checkpointer
from trm_jax.train.metrics_log import read_metrics

TOTAL = 240
TINY = [
    "--config.model.hidden_size=16",
    "--config.model.num_heads=2",
    "--config.model.expansion=2",
    "--config.model.H_cycles=1",
    "--config.model.L_cycles=2",
    "--config.model.L_layers=1",
    "--config.model.halt_max_steps=2",
    "--config.model.puzzle_emb_ndim=16",
    "--config.model.puzzle_emb_len=1",
    "--config.optim.global_batch_size=8",
    f"--config.optim.total_steps={TOTAL}",
    "--config.optim.lr=0.003",
    "--config.optim.lr_warmup_steps=10",
    "--config.train.eval_every_steps=80",
    "--config.train.log_every=20",
    "--config.train.eval_batch_size=8",
    "--config.train.progress_bar=false",
    "--config.train.tensorboard=false",
]


def _train(workdir: Path, dataset: Path, env: dict, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trm_jax",
            "train",
            "--config",
            "quickstart",
            *TINY,
            f"--config.data.dataset_dir={dataset}",
            "--workdir",
            str(workdir),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


@pytest.mark.slow
def test_build_train_sigterm_resume_evaluate(tmp_path, capsys):
    csv, dataset, workdir = tmp_path / "csv", tmp_path / "sudoku", tmp_path / "run"
    assert cli.main(["data", "gen-sudoku", str(csv), "--num-train", "40", "--num-test", "8"]) == 0
    assert cli.main(["data", "sudoku", str(dataset), "--source", str(csv), "--num-aug", "3"]) == 0
    env = dict(
        os.environ,
        JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )

    # Start, and stop it with SIGTERM once it has logged step 100 (after the evaluation at 80).
    proc = _train(workdir, dataset, env)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(f"step 100/{TOTAL}"):
            proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, "".join(lines)  # 143, as a shell reports it
    output = "".join(lines)
    assert "SIGTERM received: saved a checkpoint at step" in output, output
    assert '"interrupted": true' in output and '"signal": "SIGTERM"' in output, output
    with Checkpointer(workdir / "checkpoints") as ckpt:
        steps = ckpt.all_steps()
    assert steps[0] == 80 and 100 <= steps[-1] < TOTAL, steps

    # Resume from the run directory alone (its config.json) and finish.
    proc = subprocess.run(
        [sys.executable, "-m", "trm_jax", "train", "--workdir", str(workdir), "--resume"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"resumed {workdir} at step {steps[-1]}/{TOTAL}" in proc.stdout
    with Checkpointer(workdir / "checkpoints") as ckpt:
        assert ckpt.latest_step() == TOTAL

    series = read_metrics(workdir / "metrics.csv")
    loss = series["train/loss"]
    assert [s for s, _ in loss] == list(range(20, TOTAL + 1, 20))
    assert loss[-1][1] < 0.8 * loss[0][1], loss
    assert [s for s, _ in series["eval/accuracy"]] == [80, 160, 240]
    assert (workdir / "curves.png").is_file() and (workdir / "config.json").is_file()

    capsys.readouterr()
    assert cli.main(["evaluate", "--workdir", str(workdir)]) == 0
    assert '"accuracy"' in capsys.readouterr().out
