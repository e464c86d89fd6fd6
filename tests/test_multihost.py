"""Multi-host training on CPU: 2 processes x 4 devices through ``jax.distributed``.

Each process runs ``tests/multihost_worker.py`` (the trainer with ``train.distributed=true``);
process 0 generates the dataset while process 1 waits at the barrier and each process loads its
half of every global batch. An uninterrupted 2 x 4 run equals a 1 x 8 one and is the exact
reference for a 2 x 4 run stopped by SIGTERM, delivered to the two processes at different steps,
and resumed by two new processes.

The runs use the float64 model (``JAX_ENABLE_X64=1``): 2 x 4 and 1 x 8 sum the gradients across
devices in different orders, and in float32 the sign-like optimisers turn that rounding into
differences that depend on the CPU (see ``MULTI_DEVICE_RTOL`` in test_train_step.py, whose
derivation applies here too).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from test_train_step import MULTI_DEVICE_ATOL, MULTI_DEVICE_RTOL
from trm_jax import configs as configs_lib
from trm_jax.train import loop, parallel
from trm_jax.train.checkpoint import Checkpointer
from trm_jax.train.metrics_log import read_metrics

TESTS_DIR = Path(__file__).parent
WORKER = TESTS_DIR / "multihost_worker.py"
FLOAT64 = {"model.forward_dtype": "float64"}
RESTORE_SCRIPT = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[3])
from test_multihost import restore_in_process
leaves, extras = restore_in_process(sys.argv[1])
np.savez(sys.argv[2], **leaves)
print(__import__("json").dumps(extras))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_processes(
    workdir: Path,
    num_processes: int,
    local_devices: int,
    *,
    resume: bool = False,
    sigterm_at: tuple[int, ...] = (),
    overrides: dict | None = None,
    status: int = 0,
    timeout: int = 240,
) -> list[dict]:
    """Runs the worker as ``num_processes`` cooperating processes; their RESULT lines.

    Process i sends itself SIGTERM after dispatching step ``sigterm_at[i]`` (0 or missing:
    never). Every process must exit with ``status`` within ``timeout`` seconds (no hang).
    """
    port = _free_port()
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]), JAX_ENABLE_X64="1"
    )
    overrides = {**FLOAT64, **(overrides or {})}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                str(workdir),
                str(num_processes),
                str(i),
                str(port),
                str(local_devices),
                "1" if resume else "0",
                str(sigterm_at[i] if i < len(sigterm_at) else 0),
                json.dumps(overrides),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(num_processes)
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=timeout)[0])
    finally:
        for proc in procs:
            proc.kill()
    for proc, out in zip(procs, outputs):
        assert proc.returncode == status, out[-6000:]
    return [json.loads(next(line[7:] for line in out.splitlines() if line.startswith("RESULT "))) for out in outputs]


def restore_run(workdir: Path) -> tuple[dict[str, np.ndarray], dict]:
    """The newest checkpoint of a (float64) run as numpy leaves by path, and its extras.

    Restored by a 64-bit JAX subprocess: this process runs 32-bit JAX.
    """
    out = workdir.parent / f"{workdir.name}-state.npz"
    result = subprocess.run(
        [sys.executable, "-c", RESTORE_SCRIPT, str(workdir), str(out), str(TESTS_DIR)],
        env=dict(os.environ, JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    with np.load(out) as leaves:
        return dict(leaves), json.loads(result.stdout.strip().splitlines()[-1])


def restore_in_process(workdir: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """The newest checkpoint of a run, restored onto this process's first device, as numpy."""
    from trm_test_utils import numpy_leaves  # noqa: PLC0415

    workdir = Path(workdir)
    config = configs_lib.config_from_json(workdir / loop.CONFIG_NAME)
    loader = loop.make_train_loader(config, loop.dataset_dir(config, workdir))
    _, model_config, optim_config = loop.resolve_configs(config, loader)
    with Checkpointer(workdir / loop.CHECKPOINT_DIR, async_save=False) as ckpt:
        state, extras = loop.restore_checkpoint(ckpt, model_config, optim_config, parallel.make_mesh(jax.devices()[:1]))
    return numpy_leaves(state), extras


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> tuple[Path, list[dict]]:
    """An uninterrupted run of 2 processes x 4 devices: its directory and RESULT lines."""
    workdir = tmp_path_factory.mktemp("multihost") / "two"
    results = run_processes(workdir, 2, 4)
    assert [(r["process"], r["processes"], r["devices"], r["step"]) for r in results] == [(0, 2, 8, 12), (1, 2, 8, 12)]
    return workdir, results


@pytest.mark.slow
def test_two_processes_equal_one(two_process_run, tmp_path):
    multi_dir, multi = two_process_run
    single = run_processes(tmp_path / "single", 1, 8)
    assert [(r["processes"], r["devices"], r["step"]) for r in single] == [(1, 8, 12)]

    # Both processes report the same evaluation of all test puzzles, and it is the 1 x 8 one.
    assert multi[0]["eval"] == multi[1]["eval"]
    assert multi[0]["eval"]["count"] == single[0]["eval"]["count"] == 8
    for key, value in single[0]["eval"].items():
        np.testing.assert_allclose(
            multi[0]["eval"][key], value, rtol=MULTI_DEVICE_RTOL, atol=MULTI_DEVICE_ATOL, err_msg=key
        )

    # The same datasets (generated once per run by process 0) and the same final train state.
    for split in ("train", "test"):
        for name in sorted(p.name for p in (tmp_path / "single" / "data" / split).glob("*.npy")):
            np.testing.assert_array_equal(
                np.load(tmp_path / "single" / "data" / split / name), np.load(multi_dir / "data" / split / name)
            )
    ref, ref_extras = restore_run(tmp_path / "single")
    got, got_extras = restore_run(multi_dir)
    assert ref.keys() == got.keys()
    for key in ref:  # cross-process all-reduces sum in another order: float64 rounding apart
        if np.issubdtype(ref[key].dtype, np.floating):
            assert ref[key].dtype == np.float64, key
            np.testing.assert_allclose(got[key], ref[key], rtol=MULTI_DEVICE_RTOL, atol=MULTI_DEVICE_ATOL, err_msg=key)
        else:
            np.testing.assert_array_equal(got[key], ref[key], err_msg=key)
    assert got_extras["loader"] == ref_extras["loader"] and got_extras["step"] == 12

    # One metrics file (written by process 0).
    ref_loss = read_metrics(tmp_path / "single" / "metrics.csv")["train/loss"]
    got_loss = read_metrics(multi_dir / "metrics.csv")["train/loss"]
    assert [s for s, _ in got_loss] == [s for s, _ in ref_loss] == [3, 6, 9, 12]
    np.testing.assert_allclose([v for _, v in got_loss], [v for _, v in ref_loss], rtol=MULTI_DEVICE_RTOL)


@pytest.mark.slow
def test_sigterm_at_different_steps_stops_both_at_one_step(two_process_run, tmp_path):
    """SIGTERM reaches process 0 after step 2 and process 1 after step 3. With the stop flags
    all-reduced every 4 steps, both see them at the check of step 4 and stop after step 5 with
    one checkpoint and status 143; the resumed run ends exactly as the uninterrupted one."""
    ref_dir, ref_results = two_process_run
    workdir = tmp_path / "run"
    stopped = run_processes(
        workdir, 2, 4, sigterm_at=(2, 3), overrides={"train.stop_check_every": 4}, status=128 + signal.SIGTERM
    )
    assert [(r["process"], r["step"], r["signal"]) for r in stopped] == [(0, 5, "SIGTERM"), (1, 5, "SIGTERM")]
    with Checkpointer(workdir / loop.CHECKPOINT_DIR, async_save=False) as ckpt:
        assert ckpt.all_steps() == [5]

    resumed = run_processes(workdir, 2, 4, resume=True)
    assert [(r["step"], r["signal"]) for r in resumed] == [(12, None), (12, None)]
    assert resumed[0]["eval"] == resumed[1]["eval"] == ref_results[0]["eval"]
    ref, ref_extras = restore_run(ref_dir)
    got, got_extras = restore_run(workdir)
    assert ref.keys() == got.keys()
    for key in ref:  # the same layout sums in the same order: bit-exact
        np.testing.assert_array_equal(got[key], ref[key], err_msg=key)
    assert got_extras["loader"] == ref_extras["loader"] and got_extras["step"] == 12

    # The metrics file continues across the resume; the window logged at step 6 lost steps 4-5.
    ref_loss = dict(read_metrics(ref_dir / "metrics.csv")["train/loss"])
    got_loss = dict(read_metrics(workdir / "metrics.csv")["train/loss"])
    assert sorted(got_loss) == sorted(ref_loss) == [3, 6, 9, 12]
    assert [got_loss[s] for s in (3, 9, 12)] == [ref_loss[s] for s in (3, 9, 12)]
