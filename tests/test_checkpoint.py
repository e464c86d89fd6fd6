"""Checkpointer: bit-exact round trip, keep-N, sharded restore on 8 fake devices, mismatch error,
and a SIGKILL during a save leaving the previous checkpoint restorable."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from trm_jax.train.checkpoint import Checkpointer, CheckpointMismatchError
from trm_jax.train.state import TrainState

FORMAT_1_DIR = Path(__file__).parent / "fixtures" / "checkpoint_format1"


class Carry(NamedTuple):
    z: jax.Array
    halted: jax.Array


def _state(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "params": {
            "w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
            "e": jnp.asarray(rng.normal(size=(5,)), jnp.bfloat16),
        },
        "count": jnp.int32(7 + seed),
        "carry": Carry(z=jnp.asarray(rng.normal(size=(2, 3)), jnp.float32), halted=jnp.array([True, False])),
        "rng": jax.random.fold_in(jax.random.key(0), seed),
        "keys": jax.random.split(jax.random.key(seed), 3),
        "np_step": np.int32(11),
        "np_mask": np.array([False, True, True]),
        "epoch": 3,
    }


def _raw(x):
    """Comparable numpy view of a leaf (key arrays as their raw data)."""
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(x)), ("key", str(jax.random.key_impl(x)))
    return np.asarray(x), np.asarray(x).dtype


def _assert_bit_equal(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        (xa, xt), (ya, yt) = _raw(x), _raw(y)
        assert xt == yt and xa.shape == ya.shape
        assert xa.tobytes() == ya.tobytes()


def test_round_trip_is_bit_exact(tmp_path) -> None:
    state = _state()
    with Checkpointer(tmp_path / "ck") as ck:
        assert ck.latest_step() is None
        assert ck.save(5, state, {"loader": {"epoch": 1, "index": 42}, "lr": 1e-4})
        ck.wait_until_finished()
        assert ck.latest_step() == 5

    with Checkpointer(tmp_path / "ck") as ck:  # a fresh object, as in a new process
        restored, extras = ck.restore(target=state)
        _assert_bit_equal(restored, state)
        assert extras == {"loader": {"epoch": 1, "index": 42}, "lr": 1e-4}
        assert type(restored["np_step"]) is np.int32 and type(restored["epoch"]) is int
        assert isinstance(restored["carry"], Carry)

        # An abstract target (jax.eval_shape) restores every leaf as a jax array, keys as keys.
        abstract = jax.eval_shape(lambda: state)
        restored, _ = ck.restore(5, target=abstract)
        assert jax.dtypes.issubdtype(restored["keys"].dtype, jax.dtypes.prng_key)
        np.testing.assert_array_equal(np.asarray(restored["np_mask"]), state["np_mask"])
        assert restored["params"]["e"].dtype == jnp.bfloat16
        assert np.asarray(restored["params"]["e"]).tobytes() == np.asarray(state["params"]["e"]).tobytes()

        with pytest.raises(FileNotFoundError, match="step 4"):
            ck.restore(4, target=state)

        # Without a target: a nested dict keyed by the key-path names, keys as keys.
        on_disk, _ = ck.restore()
        assert sorted(on_disk["carry"]) == ["halted", "z"]
        assert jax.dtypes.issubdtype(on_disk["rng"].dtype, jax.dtypes.prng_key)
        assert np.asarray(on_disk["params"]["w"]).tobytes() == np.asarray(state["params"]["w"]).tobytes()


def test_keeps_only_the_newest_n(tmp_path) -> None:
    with Checkpointer(tmp_path, max_to_keep=2) as ck:
        for step in (1, 2, 3):
            ck.save(step, _state(step), {"step": step})
        ck.wait_until_finished()
        assert ck.all_steps() == [2, 3]
        restored, extras = ck.restore(target=_state())
        assert extras == {"step": 3}
        _assert_bit_equal(restored, _state(3))
    assert sorted(p for p in os.listdir(tmp_path) if p.isdigit()) == ["2", "3"]


def test_mismatched_target_gives_a_clear_error(tmp_path) -> None:
    with Checkpointer(tmp_path / "ck") as ck:
        ck.save(1, _state(), {})
        ck.wait_until_finished()
        wrong = _state()
        wrong["params"]["w"] = jnp.zeros((8, 3))
        with pytest.raises(CheckpointMismatchError) as err:
            ck.restore(target=wrong)
        message = str(err.value)
        assert f"checkpoint at {tmp_path / 'ck'} step 1 was written by a different architecture" in message
        assert "params/w has shape (4, 3), expected (8, 3)" in message

        renamed = _state()
        renamed["params"]["w2"] = renamed["params"].pop("w")
        with pytest.raises(CheckpointMismatchError, match="params/w2 is missing.*params/w is in the checkpoint"):
            ck.restore(target=renamed)

        wrong_dtype = _state()
        wrong_dtype["params"]["e"] = jnp.zeros((5,), jnp.float32)
        with pytest.raises(CheckpointMismatchError, match="params/e has dtype bfloat16, expected float32"):
            ck.restore(target=wrong_dtype)


def test_prng_key_mismatch_gives_a_clear_error(tmp_path) -> None:
    with Checkpointer(tmp_path / "ck", async_save=False) as ck:
        ck.save(1, {"rng": jax.random.key(0), "data": jnp.zeros((2,), jnp.uint32)})
        with pytest.raises(CheckpointMismatchError, match="param data is a PRNG key in the target, not in the"):
            ck.restore(target={"rng": jax.random.key(0), "data": jax.random.key(1)})
        rbg = jax.random.key(0, impl="rbg")
        with pytest.raises(
            CheckpointMismatchError, match="rng holds PRNG keys of implementation threefry2x32, expected key<rbg>"
        ):
            ck.restore(target={"rng": rbg, "data": jnp.zeros((2,), jnp.uint32)})
        keys = jax.random.split(jax.random.key(0), 3)
        with pytest.raises(CheckpointMismatchError, match=r"rng has PRNG key data shape \(2,\), expected \(3, 2\)"):
            ck.restore(target={"rng": keys, "data": jnp.zeros((2,), jnp.uint32)})


def test_rejects_non_json_extras(tmp_path) -> None:
    with Checkpointer(tmp_path) as ck:
        with pytest.raises(TypeError, match="JSON"):
            ck.save(1, _state(), {"bad": np.float32(1.0)})


_SHARDED_RESTORE = textwrap.dedent(
    """
    import sys, jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from trm_jax.train.checkpoint import Checkpointer
    assert jax.device_count() == 8
    mesh = Mesh(np.array(jax.devices()), ("data",))
    rep, batch = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    target = {
        "params": jax.ShapeDtypeStruct((4, 3), jnp.float32, sharding=rep),
        "carry": jax.ShapeDtypeStruct((16, 3), jnp.float32, sharding=batch),
        "rngs": jax.ShapeDtypeStruct((8,), jax.random.key(0).dtype, sharding=batch),
    }
    with Checkpointer(sys.argv[1]) as ck:
        state, extras = ck.restore(target=target)
    expected = np.load(sys.argv[2])
    for name in ("params", "carry"):
        assert state[name].sharding == target[name].sharding, (name, state[name].sharding)
        np.testing.assert_array_equal(np.asarray(state[name]), expected[name])
    assert state["rngs"].sharding == batch, state["rngs"].sharding
    assert len(state["carry"].addressable_shards) == 8
    np.testing.assert_array_equal(np.asarray(jax.random.key_data(state["rngs"])), expected["rngs"])
    assert extras == {"note": "one device"}
    print("OK")
    """
)


def test_restore_onto_eight_device_mesh(tmp_path) -> None:
    rng = np.random.default_rng(3)
    state = {
        "params": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
        "carry": jnp.asarray(rng.normal(size=(16, 3)), jnp.float32),
        "rngs": jax.random.split(jax.random.key(9), 8),
    }
    with Checkpointer(tmp_path / "ck") as ck:
        ck.save(1, state, {"note": "one device"})
    np.savez(
        tmp_path / "expected.npz", params=state["params"], carry=state["carry"], rngs=jax.random.key_data(state["rngs"])
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-c", _SHARDED_RESTORE, str(tmp_path / "ck"), str(tmp_path / "expected.npz")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


_CRASH_DURING_SAVE = textwrap.dedent(
    """
    import os, signal, sys, jax.numpy as jnp
    from trm_jax.train.checkpoint import Checkpointer
    ck = Checkpointer(sys.argv[1])
    ck.save(1, {"w": jnp.full((4,), 1.0), "big": jnp.zeros((2_000_000,))}, {"step": 1})
    ck.wait_until_finished()
    ck.save(2, {"w": jnp.full((4,), 2.0), "big": jnp.ones((2_000_000,))}, {"step": 2})  # async
    os.kill(os.getpid(), signal.SIGKILL)  # dies while step 2 is being written
    """
)


def test_crash_during_save_leaves_previous_checkpoint(tmp_path) -> None:
    directory = tmp_path / "ck"
    result = subprocess.run(
        [sys.executable, "-c", _CRASH_DURING_SAVE, str(directory)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == -9, result.stderr[-3000:]
    assert "2" not in os.listdir(directory)  # step 2 never committed
    # Whatever orbax left of step 2, plus a half-written file in it, must not confuse a new run.
    leftover = directory / "2.orbax-checkpoint-tmp"
    leftover.mkdir(exist_ok=True)
    (leftover / "half_written").write_bytes(b"\x00" * 100)

    target = {"w": jnp.zeros((4,)), "big": jnp.zeros((2_000_000,))}
    with Checkpointer(directory) as ck:
        assert ck.latest_step() == 1 and ck.all_steps() == [1]
        state, extras = ck.restore(target=target)
        np.testing.assert_array_equal(np.asarray(state["w"]), np.full((4,), 1.0))
        assert extras == {"step": 1}
        ck.save(2, {"w": jnp.full((4,), 3.0), "big": jnp.ones((2_000_000,))}, {"step": 2})
        ck.wait_until_finished()
        assert ck.latest_step() == 2
        state, _ = ck.restore(target=target)
        np.testing.assert_array_equal(np.asarray(state["w"]), np.full((4,), 3.0))
    assert not any("tmp" in name for name in os.listdir(directory))


def test_async_save_survives_donation_of_the_state(tmp_path) -> None:
    state = {"a": jnp.arange(100_000, dtype=jnp.float32)}
    with Checkpointer(tmp_path) as ck:
        ck.save(1, state)
        state["a"].delete()  # what donating the state to the next train step does to its buffers
        ck.wait_until_finished()
        restored, _ = ck.restore(target={"a": jax.ShapeDtypeStruct((100_000,), jnp.float32)})
    np.testing.assert_array_equal(np.asarray(restored["a"]), np.arange(100_000, dtype=np.float32))


def test_zero_size_arrays_round_trip(tmp_path):
    """A model without puzzle embeddings has a [N, 0] table; orbax cannot write it itself."""
    state = {"table": jnp.zeros((7, 0), jnp.float32), "w": jnp.arange(3.0)}
    with Checkpointer(tmp_path / "ckpt", async_save=False) as ckpt:
        ckpt.save(1, state)
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        target = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
        restored, _ = ckpt.restore(target=target)
        assert restored["table"].shape == (7, 0) and restored["table"].dtype == jnp.float32
        np.testing.assert_array_equal(restored["w"], state["w"])
        bad = dict(target, table=jax.ShapeDtypeStruct((8, 0), jnp.float32))
        with pytest.raises(CheckpointMismatchError, match="table.*shape"):
            ckpt.restore(target=bad)


def _format_1_state() -> dict:
    """The state saved in ``tests/fixtures/checkpoint_format1`` (no jax.random ops: their values may change)."""
    rng = np.random.default_rng(1)
    params = {
        "w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
        "e": jnp.asarray(rng.normal(size=(5,)), jnp.bfloat16),
    }
    train = TrainState(
        step=jnp.int32(2),
        params=params,
        buffers={"H_init": jnp.asarray(rng.normal(size=(3,)), jnp.float32), "puzzle_emb": jnp.zeros((3, 0))},
        opt_state=(
            optax.ScaleByAdamState(
                count=jnp.int32(2), mu=jax.tree.map(lambda x: x * 2, params), nu=jax.tree.map(lambda x: x * x, params)
            ),
            optax.EmptyState(),
        ),
        ema=jax.tree.map(lambda x: x + 1, params),
        carry=Carry(z=jnp.asarray(rng.normal(size=(2, 3)), jnp.float32), halted=jnp.array([True, False])),
        rng=jax.random.key(3),
    )
    return {
        "train": train,
        "keys": jax.random.wrap_key_data(np.arange(6, dtype=np.uint32).reshape(3, 2)),
        "np_step": np.int32(11),
        "np_mask": np.array([False, True]),
        "epoch": 3,
    }


def test_format_1_checkpoints_still_restore(tmp_path) -> None:
    """Checkpoints of format 1 (a nested dict of key-path names, PRNG keys as key data) restore bit-exactly.

    The fixture was written by trm_jax/train/checkpoint.py as of commit f893abc with
    ``Checkpointer(directory, async_save=False).save(2, _format_1_state(), {"loader": {"epoch": 1, "batch": 2}})``.
    """
    shutil.copytree(FORMAT_1_DIR, tmp_path / "ck")
    state = _format_1_state()
    with Checkpointer(tmp_path / "ck") as ck:
        restored, extras = ck.restore(target=state)
        _assert_bit_equal(restored, state)
        assert extras == {"loader": {"epoch": 1, "batch": 2}}
        assert type(restored["np_step"]) is np.int32 and isinstance(restored["train"].carry, Carry)

        restored, _ = ck.restore(2, target=jax.eval_shape(lambda: state))
        assert jax.dtypes.issubdtype(restored["train"].rng.dtype, jax.dtypes.prng_key)
        assert restored["train"].buffers["puzzle_emb"].shape == (3, 0)
        _assert_bit_equal(jax.tree.map(np.asarray, restored["train"].opt_state[0].mu), state["train"].opt_state[0].mu)

        on_disk, _ = ck.restore()  # as laid out by format 1: dicts all the way down
        assert on_disk["train"]["buffers"]["puzzle_emb"].shape == (3, 0)
        assert (
            np.asarray(on_disk["train"]["opt_state"]["0"]["mu"]["w"]).tobytes()
            == np.asarray(state["train"].opt_state[0].mu["w"]).tobytes()
        )
        np.testing.assert_array_equal(jax.random.key_data(on_disk["keys"]), jax.random.key_data(state["keys"]))

        wrong = _format_1_state()
        wrong["train"] = wrong["train"].replace(params={**wrong["train"].params, "w": jnp.zeros((8, 3))})
        with pytest.raises(CheckpointMismatchError, match="train/params/w has shape \\(4, 3\\), expected \\(8, 3\\)"):
            ck.restore(target=wrong)
