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

from test_parity import FIXTURE_DIR, GRAD_RTOL, Fixture, assert_close
from trm_jax.train import step as step_lib
from trm_jax.train.state import OptimConfig, create_train_state
from trm_jax.train.step import compute_gradients
from trm_test_utils import numpy_leaves, random_batch, tiny_model_config, tiny_optim_config

TESTS_DIR = pathlib.Path(__file__).parent


def test_step_gradient_is_fixture_gradient_over_global_batch():
    fixture = Fixture(str(FIXTURE_DIR / "trm_att_rope.npz"))
    config = fixture.config
    batch = fixture.batch("step0/")
    size = batch["inputs"].shape[0]
    state = create_train_state(
        config, OptimConfig(global_batch_size=size), jax.random.key(0), variables=fixture.variables
    )
    loss, _, _, grads, ids, row_grads = jax.jit(lambda s: compute_gradients(config, s, batch, jax.random.key(0)))(state)
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


# Multi-device equality is checked in float64. In float32 the 1-device and 8-device runs sum
# the per-row gradients in different orders, and AdamATan2 / sign-SGD are sign-like: a gradient
# element near zero whose rounding differs moves by a whole lr-sized step (an AMD CPU showed
# 1e-3 relative on one element of 9,216 after 4 steps). Such a tolerance would describe one
# machine, not the code. In float64 the same rounding is 2^-53 ~ 1.1e-16 relative; the float32
# run showed an amplification of about 1e4 over 4 steps (1e-3 from 1.2e-7), so float64
# differences stay near 1e-12. We allow rtol 1e-9 (1e-12 absolute for values near 0); a device's
# gradient dropped or counted twice moves the state by about the learning rate (1e-3), which the
# script checks is caught (MUTATION_OK).
MULTI_DEVICE_RTOL, MULTI_DEVICE_ATOL = 1e-9, 1e-12

MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    sys.path.insert(0, {tests!r})
    from trm_test_utils import random_batch, tiny_model_config, tiny_optim_config
    from trm_jax.train import parallel, step as step_lib
    from trm_jax.train.metrics import sums_to_means
    from trm_jax.train.state import create_train_state

    assert jax.device_count() == 8, jax.devices()
    RTOL, ATOL = {rtol!r}, {atol!r}
    MODEL = {model!r}
    config = tiny_model_config(halt_exploration_prob=0.5, forward_dtype="float64", **MODEL)
    optim = tiny_optim_config(global_batch_size=16)
    batches = [random_batch(config, 16, i) for i in range(4)]

    def run_single(optim=optim):
        state = create_train_state(config, optim, jax.random.key(0))
        assert state.params["lm_head"]["kernel"].dtype == jnp.float64
        step = jax.jit(step_lib.make_train_step(config, optim))
        out = []
        for b in batches:
            state, m = step(state, b)
            out.append(sums_to_means(m, examples=16))
        return state, out

    def run_sharded(optim=optim):
        mesh = parallel.make_mesh()
        state = parallel.create_sharded_train_state(config, optim, jax.random.key(0), mesh)
        assert len(state.carry.z_H.sharding.device_set) == 8
        step = parallel.jit_train_step(config, optim, mesh, state)
        out = []
        for b in batches:
            state, m = step(state, parallel.shard_batch(b, mesh))
            out.append(sums_to_means(m, examples=16))
        return state, out

    def run_pmap(optim=optim):
        state = parallel.replicate_for_pmap(create_train_state(config, optim, jax.random.key(0)))
        step = parallel.pmap_train_step(config, optim)
        out = []
        for b in batches:
            state, m = step(state, parallel.split_batch_for_pmap(b, 8))
            out.append(sums_to_means(jax.tree_util.tree_map(lambda x: x[0], m), examples=16))
        return parallel.unreplicate_from_pmap(state), out

    def assert_states_equal(ref, got, name):
        worst = 0.0
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(ref), jax.tree_util.tree_leaves(got)):
            if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
                a, b = jax.random.key_data(a), jax.random.key_data(b)
            a, b = np.asarray(a), np.asarray(b)
            where = name + jax.tree_util.keystr(path)
            if not np.issubdtype(a.dtype, np.floating):
                np.testing.assert_array_equal(a, b, err_msg=where)  # halted, steps, data, keys
                continue
            assert a.dtype == np.float64, where
            np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL, err_msg=where)
            worst = max(worst, float(np.max(np.abs(a - b), initial=0.0)))
        return worst

    ref_state, ref_metrics = run_single()
    # The float64 model is the float32 model: the same initial weights (drawn in float32) and,
    # on the first step, the same loss up to float32 rounding (~1e-7 relative, 1e-5 allowed).
    config32 = tiny_model_config(halt_exploration_prob=0.5, forward_dtype="float32", **MODEL)
    state32 = create_train_state(config32, optim, jax.random.key(0))
    state64 = create_train_state(config, optim, jax.random.key(0))
    for a, b in zip(jax.tree_util.tree_leaves(state32.params), jax.tree_util.tree_leaves(state64.params)):
        np.testing.assert_array_equal(np.asarray(a, np.float64), np.asarray(b))
    loss32 = jax.jit(step_lib.make_train_step(config32, optim))(state32, batches[0])[1]["loss"]
    loss64 = jax.jit(step_lib.make_train_step(config, optim))(state64, batches[0])[1]["loss"]
    np.testing.assert_allclose(float(loss32), float(loss64), rtol=1e-5)
    # Microbatches (gradient accumulation) give the same steps: 4 chunks of 4 rows on one
    # device, 2 chunks of 8 rows each sharded over the 8 devices, 2 chunks of each device's 2
    # rows under pmap (exploration draws and puzzle-embedding rows follow each row).
    runs = [("sharded", run_sharded), ("pmap", run_pmap)]
    if {microbatches!r}:
        runs += [("single, 4 microbatches", lambda: run_single(optim.replace(microbatches=4))),
                 ("sharded, 2 microbatches", lambda: run_sharded(optim.replace(microbatches=2))),
                 ("pmap, 2 microbatches", lambda: run_pmap(optim.replace(microbatches=2)))]
    worst = {{}}
    for name, run in runs:
        state, metrics = run()
        worst[name] = assert_states_equal(ref_state, state, name)
        for m1, m2 in zip(ref_metrics, metrics):
            assert m1.keys() == m2.keys()
            for k in m1:
                np.testing.assert_allclose(m2[k], m1[k], rtol=RTOL, atol=ATOL, err_msg=name + k)
    print("MULTI_DEVICE_OK", json.dumps({{"worst_abs_diff": worst,
                                          "counts": [m["count"] for m in ref_metrics]}}))

    # The comparison has teeth: the pmap gradient all-reduce with device 0's gradient dropped,
    # or counted twice, (loss and metrics left right) must fail it.
    psum = jax.lax.psum
    for sign, bug in ((-1.0, "dropped"), (1.0, "counted twice")) if {mutations!r} else ():
        def buggy_psum(tree, axis_name, **kw):
            out = psum(tree, axis_name, **kw)
            if isinstance(tree, tuple) and len(tree) == 3:  # (grads, loss, metrics) of compute_gradients
                first = jax.lax.axis_index(axis_name) == 0
                own = jax.tree_util.tree_map(lambda g: jnp.where(first, g, 0.0), tree[0])
                fix = psum(own, axis_name)
                out = (jax.tree_util.tree_map(lambda g, f: g + sign * f, out[0], fix),) + tuple(out[1:])
            return out
        jax.lax.psum = buggy_psum
        try:
            state, _ = run_pmap()
        finally:
            jax.lax.psum = psum
        try:
            assert_states_equal(ref_state, state, "pmap with a bug")
        except AssertionError:
            print("MUTATION_OK", bug)
        else:
            raise SystemExit(f"a gradient {{bug}} on one device went unnoticed")
""")


def run_with_devices(script: str, devices: int = 8, timeout: int = 600, x64: bool = False) -> str:
    env = dict(
        os.environ,
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        JAX_ENABLE_X64="1" if x64 else "0",
    )
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout


def test_single_device_equals_sharded_and_pmap():
    """1 device, a sharded jit over 8 and pmap over 8 give the same 4 steps (float64 model),
    with the batch in one piece or in microbatches."""
    out = run_with_devices(
        MULTI_DEVICE_SCRIPT.format(
            tests=str(TESTS_DIR),
            rtol=MULTI_DEVICE_RTOL,
            atol=MULTI_DEVICE_ATOL,
            model={},
            mutations=True,
            microbatches=True,
        ),
        x64=True,
    )
    assert "MULTI_DEVICE_OK" in out
    assert "MUTATION_OK dropped" in out and "MUTATION_OK counted twice" in out


def test_mlp_t_single_device_equals_sharded_and_pmap():
    """The same for an mlp_t model, whose recursion runs on sequence-major [L, B, D] tensors
    with the batch axis (the sharded one) second and merged with D for the token mixing.

    Without microbatches: how the batch is cut into chunks does not depend on the model (the
    test above covers it), and the microbatched mlp_t step trains in tests/test_configs_train.py."""
    out = run_with_devices(
        MULTI_DEVICE_SCRIPT.format(
            tests=str(TESTS_DIR),
            rtol=MULTI_DEVICE_RTOL,
            atol=MULTI_DEVICE_ATOL,
            model=dict(mlp_t=True, pos_encodings="none"),
            mutations=False,
            microbatches=False,
        ),
        x64=True,
    )
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
        state, extras = ckpt.restore(
            target=jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
        )
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
        [sys.executable, "-c", RESUME_SCRIPT.format(tests=str(TESTS_DIR)), str(split), str(k), str(2 * k)],
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]

    from trm_jax.train.checkpoint import Checkpointer

    a = numpy_leaves(Checkpointer(straight).restore(2 * k)[0])
    b = numpy_leaves(Checkpointer(split).restore(2 * k)[0])
    assert a.keys() == b.keys() and len(a) > 20
    for path, value in a.items():
        np.testing.assert_array_equal(value, b[path], err_msg=path)


def test_microbatches_keep_each_rows_exploration_draw():
    """Chunk c of a microbatched step holds rows c, c + k, ...: their halting must follow the
    exploration draws of those rows' global indices. With the Q-halt bias at +10 every row
    wants to halt at once, so which rows halt is decided by the draws alone (the multi-device
    test's model, starting at -5, never reaches them in its 4 steps)."""
    config = tiny_model_config(halt_exploration_prob=0.5, halt_max_steps=8)
    state = create_train_state(config, tiny_optim_config(global_batch_size=16), jax.random.key(0))
    params = dict(state.params, q_head=dict(state.params["q_head"], bias=jnp.full((2,), 10.0, jnp.float32)))
    state = state.replace(params=params)
    batch = random_batch(config, 16, 0)
    runs = {}
    for chunks in (1, 4, 16):
        _, carry, metrics, grads, ids, row_grads = jax.jit(
            lambda s, m=chunks: compute_gradients(config, s, batch, jax.random.key(3), microbatches=m)
        )(state)
        runs[chunks] = carry, metrics, ids, row_grads
    whole = runs[1]
    assert 0 < int(np.sum(whole[0].halted)) < 16, "the draws must split the batch"
    for chunks in (4, 16):
        carry, metrics, ids, row_grads = runs[chunks]
        np.testing.assert_array_equal(carry.halted, whole[0].halted, err_msg=f"{chunks} chunks")
        np.testing.assert_array_equal(carry.steps, whole[0].steps)
        np.testing.assert_array_equal(ids, whole[2])
        np.testing.assert_array_equal(metrics["count"], whole[1]["count"])
        # Row order restored: each row's gradient is its own. The chunked products round
        # differently (float32, eps 1.2e-7): measured 1.5e-6 of the largest element; we
        # allow 1e-5 of it, while a row holding another row's gradient is off by O(largest).
        scale = float(np.max(np.abs(whole[3])))
        np.testing.assert_allclose(row_grads, whole[3], rtol=0, atol=1e-5 * scale)


def test_microbatches_must_divide_the_batch():
    import pytest

    from trm_jax.config import ConfigError

    with pytest.raises(ConfigError, match="microbatches=3.*global_batch_size=8"):
        tiny_optim_config(global_batch_size=8, microbatches=3)
    config = tiny_model_config()
    state = create_train_state(config, tiny_optim_config(), jax.random.key(0))
    with pytest.raises(ValueError, match="microbatches=3: expected a positive divisor of the per-device batch 8"):
        compute_gradients(config, state, random_batch(config, 8, 0), jax.random.key(0), microbatches=3)
    from trm_jax.train import parallel

    mesh = parallel.make_mesh(jax.devices()[:1])
    optim = tiny_optim_config(global_batch_size=8, microbatches=4)
    state = parallel.create_sharded_train_state(config, optim, jax.random.key(0), mesh, batch_size=6)
    with pytest.raises(ValueError, match="global batch 6 is not divisible by the 1 devices x optim.microbatches=4"):
        parallel.jit_train_step(config, optim, mesh, state)
