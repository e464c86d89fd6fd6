"""Array checksums of checkpoints (trm_jax.train.checksum) and their check on restore."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trm_jax.train.checkpoint import CheckpointDamagedError, Checkpointer
from trm_jax.train.checksum import checksums


def test_any_changed_element_changes_the_checksum():
    x = jax.random.normal(jax.random.key(0), (64, 33), jnp.float32)
    base = checksums({"x": x})["x"]
    assert len(base) == 16
    assert checksums({"x": x.at[17, 5].set(x[17, 5] + 1e-6)})["x"] != base  # one ulp-scale change
    swapped = x.at[0, 0].set(x[0, 1]).at[0, 1].set(x[0, 0])
    assert checksums({"x": swapped})["x"] != base  # same values, other places
    assert checksums({"x": np.asarray(x)})["x"] == base  # numpy or jax: the same bytes, the same sum


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32, jnp.int32, jnp.uint32, jnp.bool_, jnp.uint8])
def test_every_dtype_of_a_train_state(dtype):
    x = (jnp.arange(100) % 7).astype(dtype)
    changed = x.at[3].set(jnp.logical_not(x[3]) if dtype == jnp.bool_ else x[3] + 1)
    assert checksums({"x": x})["x"] != checksums({"x": changed})["x"]
    assert checksums({"empty": jnp.zeros((0, 4), dtype)}) == {}  # nothing to sum


def test_sharded_equals_single_device():
    """Sums modulo 2**32 in any order: 8 shards give the checksum of one device (subprocess:
    8 host devices must be set before JAX starts)."""
    script = textwrap.dedent("""
        import jax, jax.numpy as jnp, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        from trm_jax.train.checksum import checksums
        x = jax.random.normal(jax.random.key(1), (64, 48), jnp.float32)
        mesh = Mesh(np.array(jax.devices()), ("data",))
        rows = jax.device_put(x, NamedSharding(mesh, P("data")))
        cols = jax.device_put(x, NamedSharding(mesh, P(None, "data")))
        assert len(rows.sharding.device_set) == 8
        one = checksums({"x": x})
        assert checksums({"x": rows}) == one == checksums({"x": cols}), (one, checksums({"x": rows}))
        print("equal")
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0 and "equal" in result.stdout, result.stderr[-3000:]


def _meta_file(directory, step):
    return directory / str(step) / "meta" / "metadata"


def test_restore_checks_arrays_and_extras(tmp_path):
    state = {"w": jnp.arange(1000, dtype=jnp.float32), "key": jax.random.key(3)}
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        ckpt.save(1, state, {"loader": {"epoch": 0}})
        ckpt.save(2, state, {"loader": {"epoch": 1}})
    meta = json.loads(_meta_file(tmp_path, 2).read_text())
    assert meta["format_version"] == 3 and set(meta["checksums"]) == {"w", "key"}

    meta["checksums"]["w"] = "0" * 16  # as if the array's bytes had changed
    _meta_file(tmp_path, 2).write_text(json.dumps(meta))
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        with pytest.raises(
            CheckpointDamagedError, match=r"array w does not match the checksum it was saved with"
        ) as info:
            ckpt.restore(2, target=state)
        assert info.value.step == 2 and info.value.intact_steps == [1]
        ckpt.restore(1, target=state)  # the older step is fine

    extras = tmp_path / "1" / "extras" / "metadata"
    extras.write_text(json.dumps({"loader": {"epoch": 5}}))  # valid JSON, other content
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        with pytest.raises(CheckpointDamagedError, match="extras/ does not match the checksum"):
            ckpt.restore(1, target=state)


def test_checkpoints_without_checksums_still_restore(tmp_path):
    """Format 2 (before checksums): restored unchecked."""
    state = {"w": jnp.arange(10, dtype=jnp.float32)}
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        ckpt.save(1, state, {"a": 1})
    meta = json.loads(_meta_file(tmp_path, 1).read_text())
    del meta["checksums"], meta["extras_sha256"]
    meta["format_version"] = 2
    _meta_file(tmp_path, 1).write_text(json.dumps(meta))
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        restored, extras = ckpt.restore(1, target=state)
    np.testing.assert_array_equal(restored["w"], state["w"])
    assert extras == {"a": 1}
