"""The training engine: gradient parity, buffers, recompiles, multi-device equality, resume."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np

from trm_jax.train import step as step_lib
from trm_jax.train.state import OptimConfig, create_train_state
from trm_jax.train.step import compute_gradients

from test_parity import FIXTURE_DIR, Fixture, assert_close, GRAD_RTOL
from trm_test_utils import numpy_leaves, random_batch, tiny_model_config, tiny_optim_config

TESTS_DIR = pathlib.Path(__file__).parent


def test_step_gradient_is_fixture_gradient_over_global_batch():
    fixture = Fixture(str(FIXTURE_DIR / "trm_att_rope.npz"))
    config = fixture.config
    batch = fixture.batch("step0/")
    size = batch["inputs"].shape[0]
    state = create_train_state(config, OptimConfig(global_batch_size=size), jax.random.key(0),
                               variables=fixture.variables)
    loss, _, _, grads, ids, row_grads = jax.jit(
        lambda s: compute_gradients(config, s, batch, jax.random.key(0)))(state)
    assert_close(loss, fixture.data["step0/loss"] / size, 1e-5, 0, "loss / B")
    expected = fixture.group("step0/grad/")
    from trm_jax.interop import to_torch_state_dict
    ours = to_torch_state_dict({"params": grads, "buffers": state.buffers})
    for name, value in expected.items():
        actual = row_grads if name == "puzzle_emb.local_weights" else ours[name]
        assert_close(actual, value / size, GRAD_RTOL, 1e-8, f"grad/{name}")
    np.testing.assert_array_equal(ids, batch["puzzle_identifiers"])


def test_buffers_and_untouched_puzzle_rows_never_change():
    config = tiny_model_config(num_puzzle_identifiers=50)
    optim_config = tiny_optim_config()
    state = create_train_state(config, optim_config, jax.random.key(0))
    h_init, l_init = np.asarray(state.buffers["H_init"]), np.asarray(state.buffers["L_init"])
    table = np.asarray(state.buffers["puzzle_emb"]) + 0.5
    state = state.replace(buffers=dict(state.buffers, puzzle_emb=jnp.asarray(table)))
    train_step = jax.jit(step_lib.make_train_step(config, optim_config))
    seen = set()
    for i in range(3):
        batch = random_batch(config, optim_config.global_batch_size, i)
        batch["puzzle_identifiers"] = batch["puzzle_identifiers"] % 20  # rows >= 20 unused
        state, _ = train_step(state, batch)
        seen |= set(np.asarray(state.carry.current_data["puzzle_identifiers"]).tolist())
    np.testing.assert_array_equal(state.buffers["H_init"], h_init)
    np.testing.assert_array_equal(state.buffers["L_init"], l_init)
    new_table = np.asarray(state.buffers["puzzle_emb"])
    untouched = [i for i in range(50) if i not in seen]
    np.testing.assert_array_equal(new_table[untouched], table[untouched])
    assert not np.allclose(new_table[sorted(seen)], table[sorted(seen)])
    assert int(state.step) == 3


def test_train_step_compiles_once_and_learns():
    config = tiny_model_config()
    optim_config = tiny_optim_config(lr=3e-3)
    state = create_train_state(config, optim_config, jax.random.key(0))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def train_step(state, batch):
        return step_lib.train_step(config, optim_config, state, batch)

    losses = []
    with jax.transfer_guard("disallow"):
        batches = [jax.device_put(random_batch(config, 8, i % 4)) for i in range(40)]
    for batch in batches:
        with jax.transfer_guard("disallow"):
            state, metrics = train_step(state, batch)
        losses.append(metrics["lm_loss"])
    losses = [float(x) for x in losses]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses


MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, {tests!r})
    from trm_test_utils import random_batch, tiny_model_config, tiny_optim_config
    from trm_jax.train import parallel, step as step_lib
    from trm_jax.train.state import create_train_state

    assert jax.device_count() == 8, jax.devices()
    config = tiny_model_config(halt_exploration_prob=0.5)
    optim = tiny_optim_config(global_batch_size=16)
    batches = [random_batch(config, 16, i) for i in range(4)]

    def run_single():
        state = create_train_state(config, optim, jax.random.key(0))
        step = jax.jit(step_lib.make_train_step(config, optim))
        out = []
        for b in batches:
            state, m = step(state, b)
            out.append(step_lib.summarize_metrics(m, 16))
        return state, out

    def run_sharded():
        mesh = parallel.make_mesh()
        state = parallel.create_sharded_train_state(config, optim, jax.random.key(0), mesh)
        assert len(state.carry.z_H.sharding.device_set) == 8
        step = parallel.jit_train_step(config, optim, mesh, state)
        out = []
        for b in batches:
            state, m = step(state, parallel.shard_batch(b, mesh))
            out.append(step_lib.summarize_metrics(m, 16))
        return state, out

    def run_pmap():
        state = parallel.replicate_for_pmap(create_train_state(config, optim, jax.random.key(0)))
        step = parallel.pmap_train_step(config, optim)
        out = []
        for b in batches:
            state, m = step(state, parallel.split_batch_for_pmap(b, 8))
            out.append(step_lib.summarize_metrics(jax.tree_util.tree_map(lambda x: x[0], m), 16))
        return parallel.unreplicate_from_pmap(state), out

    ref_state, ref_metrics = run_single()
    for name, run in (("sharded", run_sharded), ("pmap", run_pmap)):
        state, metrics = run()
        for a, b in zip(jax.tree_util.tree_leaves(ref_state), jax.tree_util.tree_leaves(state)):
            if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
                a, b = jax.random.key_data(a), jax.random.key_data(b)
            np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                       rtol=2e-5, atol=2e-6, err_msg=name)
        for m1, m2 in zip(ref_metrics, metrics):
            assert m1.keys() == m2.keys()
            for k in m1:
                np.testing.assert_allclose(m1[k], m2[k], rtol=2e-5, atol=1e-6, err_msg=name + k)
    print("MULTI_DEVICE_OK", json.dumps([m["count"] for m in ref_metrics]))
""")


def run_with_devices(script: str, devices: int = 8, timeout: int = 600) -> str:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout


def test_single_device_equals_sharded_and_pmap():
    out = run_with_devices(MULTI_DEVICE_SCRIPT.format(tests=str(TESTS_DIR)))
    assert "MULTI_DEVICE_OK" in out


RESUME_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_train_step import train_and_save
    train_and_save(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), resume=True)
""")


def train_and_save(directory, start: int, stop: int, resume: bool = False) -> None:
    """Trains steps [start, stop) on a 1-device mesh, restoring step ``start`` if ``resume``."""
    from trm_jax.train import parallel
    from trm_jax.train.checkpoint import Checkpointer

    config = tiny_model_config(halt_exploration_prob=0.5)
    optim = tiny_optim_config(global_batch_size=8)
    mesh = parallel.make_mesh(jax.devices()[:1])
    state = parallel.create_sharded_train_state(config, optim, jax.random.key(0), mesh)
    ckpt = Checkpointer(directory)
    if resume:
        state, extras = ckpt.restore(target=jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state))
        assert extras["next_batch"] == start, extras
    step = parallel.jit_train_step(config, optim, mesh, state)
    for i in range(start, stop):
        state, _ = step(state, parallel.shard_batch(random_batch(config, 8, i), mesh))
    ckpt.save(stop, state, extras={"next_batch": stop}, force=True)
    ckpt.wait_until_finished()
    ckpt.close()


def test_resume_is_bit_exact(tmp_path):
    """2k steps straight == k steps, save, a new process restores and trains k more."""
    k = 3
    straight, split = tmp_path / "straight", tmp_path / "split"
    train_and_save(straight, 0, 2 * k)
    train_and_save(split, 0, k)
    result = subprocess.run(
        [sys.executable, "-c", RESUME_SCRIPT.format(tests=str(TESTS_DIR)), str(split), str(k),
         str(2 * k)], env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
        timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]

    from trm_jax.train.checkpoint import Checkpointer
    a = numpy_leaves(Checkpointer(straight).restore(2 * k)[0])
    b = numpy_leaves(Checkpointer(split).restore(2 * k)[0])
    assert a.keys() == b.keys() and len(a) > 20
    for path, value in a.items():
        np.testing.assert_array_equal(value, b[path], err_msg=path)
