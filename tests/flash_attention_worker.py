"""Worker of tests/test_flash_attention.py: the loss and gradients of a tiny attention TRM's
training step with the Pallas kernel (Pallas' HLO interpreter) on 1 and 8 CPU devices, against the
float64 model, next to the XLA-attention float32 step. Run with JAX_ENABLE_X64=1 and 8 host
devices; prints "kernel within float32 rounding of float64" when every check holds."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from trm_jax.model.flash_attention import partitioned  # noqa: E402
from trm_jax.train import parallel  # noqa: E402
from trm_jax.train.state import create_train_state  # noqa: E402
from trm_jax.train.step import compute_gradients  # noqa: E402
from trm_test_utils import pallas_hlo_interpret, random_batch, tiny_model_config, tiny_optim_config  # noqa: E402

ERROR_FACTOR = 4.0  # as in test_flash_attention.py
BATCH = 8


def loss_and_grads(model_config, mesh=None) -> dict[str, np.ndarray]:
    optim_config = tiny_optim_config(global_batch_size=BATCH)
    batch = random_batch(model_config, BATCH, seed=3)
    step = functools.partial(compute_gradients, model_config)

    def run(state, batch):
        loss, _, _, grads, _, row_grads = step(state, batch, jax.random.key(5))
        return loss, grads, row_grads

    if mesh is None:
        state = create_train_state(model_config, optim_config, jax.random.key(0))
        loss, grads, row_grads = jax.jit(run)(state, batch)
    else:
        state = parallel.create_sharded_train_state(model_config, optim_config, jax.random.key(0), mesh)
        sharded = jax.jit(
            partitioned(run, mesh, parallel.DATA_AXIS),
            in_shardings=(parallel.state_shardings(state, mesh), parallel.batch_sharding(mesh)),
        )
        loss, grads, row_grads = sharded(state, parallel.shard_batch(batch, mesh))
    leaves = {jax.tree_util.keystr(p): np.asarray(x, np.float64) for p, x in jax.tree_util.tree_leaves_with_path(grads)}
    leaves.update(loss=np.asarray(loss, np.float64), puzzle_rows=np.asarray(row_grads, np.float64))
    return leaves


def main() -> None:
    assert jax.config.jax_enable_x64 and jax.device_count() == 8
    base = dict(seq_len=100, forward_dtype="float32")  # 100 + 2 prefix positions: padded to 128
    truth = loss_and_grads(tiny_model_config(**dict(base, forward_dtype="float64")))
    xla = loss_and_grads(tiny_model_config(**base, attention_impl="xla"))
    with pallas_hlo_interpret():  # the differentiated cycle is under jax.checkpoint
        kernel_one = loss_and_grads(tiny_model_config(**base, attention_impl="pallas"))
        kernel_eight = loss_and_grads(tiny_model_config(**base, attention_impl="pallas"), mesh=parallel.make_mesh())
    worst = 0.0
    for name, want in truth.items():
        xla_error = np.max(np.abs(xla[name] - want))
        floor = 1e-6 * max(np.max(np.abs(want)), 1e-30)
        for label, got in (("1 device", kernel_one[name]), ("8 devices", kernel_eight[name])):
            error = np.max(np.abs(got - want))
            ratio = error / max(xla_error, floor)
            worst = max(worst, ratio)
            assert ratio <= ERROR_FACTOR, (name, label, error, xla_error)
    print(f"kernel within float32 rounding of float64: {len(truth)} arrays, worst error {worst:.2f}x the XLA step's")


if __name__ == "__main__":
    main()
