"""Multi-host training on CPU: 2 processes x 4 devices through ``jax.distributed`` equal 1 x 8.

Each process runs ``tests/multihost_worker.py`` (the trainer with ``train.distributed=true``);
process 0 generates the dataset while process 1 waits at the barrier, each process loads its
half of every global batch, and the run is stopped at step 6 and resumed by two new processes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from trm_jax import configs as configs_lib
from trm_jax.train import loop, parallel
from trm_jax.train.checkpoint import Checkpointer
from trm_jax.train.metrics_log import read_metrics
from trm_test_utils import numpy_leaves

TESTS_DIR = Path(__file__).parent
WORKER = TESTS_DIR / "multihost_worker.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_processes(workdir: Path, num_processes: int, local_devices: int, *, stop_at: int = 0,
                  resume: bool = False, timeout: int = 600) -> list[dict]:
    """Runs the worker as ``num_processes`` cooperating processes; their RESULT lines."""
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]))
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(workdir), str(num_processes), str(i), str(port),
                               str(local_devices), str(stop_at), "1" if resume else "0"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(num_processes)]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=timeout)[0])
    finally:
        for proc in procs:
            proc.kill()
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-6000:]
    return [json.loads(next(line[7:] for line in out.splitlines() if line.startswith("RESULT ")))
            for out in outputs]


def restore_run(workdir: Path) -> tuple[dict[str, np.ndarray], dict]:
    """The newest checkpoint of a run, restored onto this process's first device, as numpy."""
    config = configs_lib.config_from_json(workdir / loop.CONFIG_NAME)
    loader = loop.make_train_loader(config, loop.dataset_dir(config, workdir))
    _, model_config, optim_config = loop.resolve_configs(config, loader)
    with Checkpointer(workdir / loop.CHECKPOINT_DIR, async_save=False) as ckpt:
        state, extras = loop.restore_checkpoint(ckpt, model_config, optim_config,
                                                parallel.make_mesh(jax.devices()[:1]))
    return numpy_leaves(state), extras


@pytest.mark.slow
def test_two_processes_equal_one_and_resume(tmp_path):
    single = run_processes(tmp_path / "single", 1, 8)
    assert [(r["processes"], r["devices"], r["step"]) for r in single] == [(1, 8, 12)]

    stopped = run_processes(tmp_path / "multi", 2, 4, stop_at=6)
    assert [(r["process"], r["processes"], r["devices"], r["step"]) for r in stopped] == [
        (0, 2, 8, 6), (1, 2, 8, 6)]
    resumed = run_processes(tmp_path / "multi", 2, 4, resume=True)
    assert [r["step"] for r in resumed] == [12, 12]

    # Both processes report the same evaluation of all test puzzles, and it is the 1 x 8 one.
    assert resumed[0]["eval"] == resumed[1]["eval"]
    assert resumed[0]["eval"]["count"] == single[0]["eval"]["count"] == 8
    for key, value in single[0]["eval"].items():
        np.testing.assert_allclose(resumed[0]["eval"][key], value, rtol=1e-5, atol=1e-6, err_msg=key)

    # The same datasets (generated once per run by process 0) and the same final train state.
    for split in ("train", "test"):
        for name in sorted(p.name for p in (tmp_path / "single" / "data" / split).glob("*.npy")):
            np.testing.assert_array_equal(np.load(tmp_path / "single" / "data" / split / name),
                                          np.load(tmp_path / "multi" / "data" / split / name))
    ref, ref_extras = restore_run(tmp_path / "single")
    got, got_extras = restore_run(tmp_path / "multi")
    assert ref.keys() == got.keys()
    for key in ref:  # cross-process all-reduces sum in another order: float32 rounding apart
        np.testing.assert_allclose(got[key], ref[key], rtol=2e-5, atol=1e-5, err_msg=key)
    assert got_extras["loader"] == ref_extras["loader"] and got_extras["step"] == 12

    # One metrics file (written by process 0), continued across the resume.
    ref_loss = read_metrics(tmp_path / "single" / "metrics.csv")["train/loss"]
    got_loss = read_metrics(tmp_path / "multi" / "metrics.csv")["train/loss"]
    assert [s for s, _ in got_loss] == [s for s, _ in ref_loss] == [3, 6, 9, 12]
    np.testing.assert_allclose([v for _, v in got_loss], [v for _, v in ref_loss], rtol=1e-5)
