"""Fault injection: nothing a crash, a second trainer, a signal or a garbled file does loses a run.

Each case asserts its outcome:

* bytes flipped in every data file of a checkpoint, one file and one place at a time: every
  flip in data the restore reads is found (orbax reads most of them back without complaint;
  the checksums saved with each array find them) and named as damage of that step; the
  others leave the restored state identical;
* SIGKILL at four points of a checkpoint save (before it, while the asynchronous write runs,
  with every file written but not committed, just after the commit), then ``--resume``: the
  final train state equals an uninterrupted run's bit for bit, and no temporary files remain;
* a second trainer on a run directory a live one holds: refused with one line naming the
  holder, the holder's files unchanged; once the holder is SIGKILLed, its stale lock is taken
  over;
* SIGTERM while the run's dataset is generated, while it is built, and while the train step
  compiles, also when the handler's exception is swallowed (a garbage-collector callback):
  exit status 143, one line, no dataset or run file left half-written.

The runs are subprocesses of tests/fault_worker.py (a 6-step tiny run on CPU).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from trm_jax.data.sudoku import build_sudoku_dataset
from trm_jax.train import loop, parallel
from trm_jax.train.checkpoint import CheckpointDamagedError, Checkpointer
from trm_jax.train.run_lock import LOCK_NAME
from trm_test_utils import numpy_leaves, tiny_run_config

WORKER = Path(__file__).with_name("fault_worker.py")
SUDOKU_CSV = Path(__file__).parent / "data" / "sudoku_small"
KILL_POINTS = ("kill-before-save", "kill-during-save", "kill-before-commit", "kill-after-commit")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return build_sudoku_dataset(
        tmp_path_factory.mktemp("faults") / "sudoku", source_dir=SUDOKU_CSV, hub_repo=None, num_aug=3, seed=0
    )


def run_worker(workdir: Path, dataset: Path, point: str, *extra: str) -> subprocess.CompletedProcess:
    """The worker in a subprocess (it shares the session's compilation cache: tests/conftest.py)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, str(WORKER), str(workdir), str(dataset), point, *extra],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def final_state(workdir: Path) -> dict[str, np.ndarray]:
    with Checkpointer(workdir / loop.CHECKPOINT_DIR, async_save=False) as ckpt:
        assert ckpt.latest_step() == 6, ckpt.all_steps()
        state, _ = ckpt.restore(6)
    return numpy_leaves(state)


def tree_digest(root: Path) -> dict[str, str]:
    """md5 of every file under ``root``, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------------- garbled checkpoints


def test_every_flipped_byte_is_found_or_unused(dataset, tmp_path):
    """Flip 8 bytes at 3 places (1/4, 1/2, 3/4) of every OCDBT data file of the final checkpoint,
    one place at a time. Each restore either raises CheckpointDamagedError for that step, or
    gives back exactly the saved state: the bytes were in a file the restore does not read
    (OCDBT keeps each process's superseded b-tree nodes beside the merged tree). Never a
    silently different state."""
    workdir = tmp_path / "run"
    assert run_worker(workdir, dataset, "none").returncode == 0
    step_dir = workdir / loop.CHECKPOINT_DIR / "6"
    files = sorted(p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d")
    assert files, f"no ocdbt data files under {step_dir}"
    target = _abstract_state(dataset)
    with Checkpointer(workdir / loop.CHECKPOINT_DIR, async_save=False) as ckpt:
        saved = numpy_leaves(ckpt.restore(6, target=target)[0])
    tried, by_checksum, by_orbax, unused_files = 0, 0, 0, set()
    for path in files:
        pristine = path.read_bytes()
        for fraction in (0.25, 0.5, 0.75):
            at = int(len(pristine) * fraction)
            path.write_bytes(pristine[:at] + bytes(b ^ 0xFF for b in pristine[at : at + 8]) + pristine[at + 8 :])
            tried += 1
            with Checkpointer(workdir / loop.CHECKPOINT_DIR, async_save=False) as ckpt:
                try:
                    got = numpy_leaves(ckpt.restore(6, target=target)[0])
                except CheckpointDamagedError as err:
                    assert err.step == 6 and err.intact_steps == [2, 4], err
                    checksum = "does not match the checksum" in err.reason
                    by_checksum, by_orbax = by_checksum + checksum, by_orbax + (not checksum)
                else:
                    for name, want in saved.items():
                        np.testing.assert_array_equal(got[name], want, err_msg=f"{path.name}: {name}")
                    unused_files.add(path)
            path.write_bytes(pristine)
    found = by_checksum + by_orbax
    print(
        f"flipped bytes: {tried} places in {len(files)} OCDBT data files: {found} found as damage "
        f"({by_checksum} by the arrays' checksums, {by_orbax} by orbax/tensorstore), {tried - found} in "
        f"{len(unused_files)} files the restore does not read (restored identical)"
    )
    assert by_checksum > 0 and found + 3 * len(unused_files) == tried
    # The arrays live in the largest files: every flip in them is found.
    assert max(p.stat().st_size for p in files) not in {p.stat().st_size for p in unused_files}


def _abstract_state(dataset: Path):
    """The abstract train state of the worker's run (its restore target)."""
    from trm_jax import configs as configs_lib  # noqa: PLC0415
    from trm_jax.data.format import read_metadata  # noqa: PLC0415

    config = tiny_run_config(dataset, **{"optim.total_steps": 6})
    model_config = configs_lib.model_config(config, read_metadata(dataset / "train"))
    return parallel.abstract_state(model_config, configs_lib.optim_config(config), parallel.make_mesh())


# --------------------------------------------------------------------------- killed saves


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory) -> dict[str, np.ndarray]:
    workdir = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = run_worker(workdir, dataset, "none")
    assert result.returncode == 0, result.stderr[-3000:]
    return final_state(workdir)


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_during_a_save_then_resume_loses_nothing(point, dataset, uninterrupted, tmp_path):
    workdir = tmp_path / "run"
    killed = run_worker(workdir, dataset, point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    with Checkpointer(workdir / loop.CHECKPOINT_DIR, async_save=False) as ckpt:
        assert ckpt.latest_step() == (4 if point == "kill-after-commit" else 2), ckpt.all_steps()
    assert (workdir / LOCK_NAME).exists()  # left by the killed trainer: stale
    resumed = run_worker(workdir, dataset, "none", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = final_state(workdir)
    assert got.keys() == uninterrupted.keys()
    for name, want in uninterrupted.items():
        np.testing.assert_array_equal(got[name], want, err_msg=name)
    leftovers = [p.name for p in (workdir / loop.CHECKPOINT_DIR).iterdir() if not p.name.isdigit()]
    assert not leftovers and not (workdir / LOCK_NAME).exists(), leftovers


# ------------------------------------------------------------------------------ two writers


def test_second_trainer_is_refused_and_a_stale_lock_taken_over(dataset, tmp_path):
    workdir = tmp_path / "run"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    holder = subprocess.Popen(
        [sys.executable, str(WORKER), str(workdir), str(dataset), "hold"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (workdir / loop.CONFIG_NAME).exists():  # locked, and past start-up
            assert holder.poll() is None and time.monotonic() < deadline, holder.stderr.read()[-3000:]
            time.sleep(0.2)
        holder.send_signal(signal.SIGSTOP)  # holds the lock, writes nothing while we look
        before = tree_digest(workdir)
        second = run_worker(workdir, dataset, "none", "--resume")
        err = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(err) == 1, second.stderr[-3000:]
        assert err[0].startswith(f"error: {workdir} is in use by another trm-jax train (pid {holder.pid} on host ")
        assert tree_digest(workdir) == before
        holder.kill()  # SIGKILL: the lock file stays, its flock goes with the process
        holder.wait(timeout=60)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert (workdir / LOCK_NAME).exists()
    shutil.rmtree(workdir / loop.CHECKPOINT_DIR, ignore_errors=True)  # the held run saved none; start afresh
    (workdir / loop.CONFIG_NAME).unlink()
    after = run_worker(workdir, dataset, "none")
    assert after.returncode == 0, after.stderr[-3000:]
    assert not (workdir / LOCK_NAME).exists()


# --------------------------------------------------------------------- signals before the loop


@pytest.mark.parametrize(
    "point", ["term-during-generation", "term-during-build", "term-during-compile", "term-swallowed-during-compile"]
)
def test_sigterm_before_the_loop_leaves_nothing_half_written(point, dataset, tmp_path):
    workdir = tmp_path / "run"
    result = run_worker(workdir, dataset, point)
    err = result.stderr.strip().splitlines()
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-3000:]
    if point == "term-swallowed-during-compile":  # the case is what it says: the exception was lost there
        assert "Exception ignored" in result.stderr and "Interrupted" in result.stderr, result.stderr[-3000:]
    assert len([line for line in err if line.startswith("error: ")]) == 1, result.stderr[-3000:]
    assert "interrupted by SIGTERM before the first training step" in err[-1]
    # Nothing at all: the dataset's and CSVs' temporary directories are removed, and so is the
    # run directory, which the run's lock created (the worker's config file lies beside it).
    left = sorted(
        str(p.relative_to(tmp_path))
        for p in tmp_path.rglob("*")
        if not (p.name.endswith("_config.py") or "__pycache__" in p.parts)
    )
    assert left == [], left
