"""Every packaged config (trm_jax/experiments/) trains on CPU in its own dtype and loss with finite loss and gradients.

The paper configs train in bfloat16 with the stablemax loss, where a logit is exactly 1.0 very
often; a NaN gradient there (issue 10) stopped every paper config within 4 steps. The models
are shrunk (width, cycles, puzzle table, and the 900-cell grids of maze/ARC to 81 cells: their
attention blocks do not depend on the length) so that 50 steps of each run in seconds on a CPU;
the dtype, loss, block type (attention / mlp_t), position encoding, vocabulary and optimiser
stay those of the config.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from test_configs import ALL, DATASET, FakeMetadata
from trm_jax import configs as configs_lib
from trm_jax.train import step as step_lib
from trm_jax.train.state import create_train_state
from trm_test_utils import random_batch

STEPS = 50
SHRINK = {
    "model.hidden_size": 32,
    "model.num_heads": 2,
    "model.expansion": 2.0,
    "model.H_cycles": 2,
    "model.L_cycles": 2,
    "model.halt_max_steps": 4,
    "model.puzzle_emb_ndim": 32,
    "model.puzzle_emb_len": 2,
    "optim.global_batch_size": 8,
    "optim.lr_warmup_steps": 5,
}

# The paper's Sudoku model also in microbatches: its bfloat16 step with chunks of 4 rows.
CASES = (
    [(name, None, {}) for name in ALL]
    + [("quickstart", "bfloat16", {})]
    + [("sudoku_mlp", None, {"optim.microbatches": 2})]
)


def _case_id(name, dtype, extra) -> str:
    return name + (f"-{dtype}" if dtype else "") + "".join(f"-{k.split('.')[-1]}{v}" for k, v in extra.items())


def _all_finite(tree) -> bool:
    return all(
        bool(np.all(np.isfinite(np.asarray(leaf, np.float32))))
        for leaf in jax.tree_util.tree_leaves(tree)
        if jnp.issubdtype(leaf.dtype, jnp.floating)
    )


@pytest.mark.parametrize("name, dtype, extra", CASES, ids=[_case_id(*c) for c in CASES])
def test_config_trains_with_finite_loss_and_gradients(name, dtype, extra):
    overrides = dict(SHRINK, **extra)
    if dtype:
        overrides["model.forward_dtype"] = dtype
    config = configs_lib.load_config(name, overrides)
    seq_len, vocab, identifiers = DATASET[name]
    seq_len = min(seq_len, 81)  # the mlp_t configs are Sudoku (81): their mixing width is kept
    model = configs_lib.model_config(config, FakeMetadata(seq_len, vocab, min(identifiers, 20)))
    optim = configs_lib.optim_config(config, total_steps=STEPS)
    assert optim.microbatches == extra.get("optim.microbatches", 1)
    expected_dtype = dtype or ("float32" if name == "quickstart" else "bfloat16")
    assert model.forward_dtype == expected_dtype
    if name != "quickstart":
        assert model.loss_type == "stablemax_cross_entropy"

    state = create_train_state(model, optim, jax.random.key(0))
    train_step = jax.jit(step_lib.make_train_step(model, optim))
    losses = []
    for i in range(STEPS):
        state, metrics = train_step(state, random_batch(model, optim.global_batch_size, i % 8))
        losses.append(metrics["loss"])
    losses = np.asarray(jax.device_get(losses))
    assert np.all(np.isfinite(losses)), f"{name}: first non-finite loss at step {np.argmin(np.isfinite(losses)) + 1}"
    # A non-finite gradient at any step leaves a permanent mark: the AdamATan2 moments
    # accumulate every gradient, and sign-SGD writes sign(NaN) into the puzzle table.
    assert _all_finite(state.opt_state), f"{name}: a gradient was not finite"
    assert _all_finite(state.params) and _all_finite(state.buffers) and _all_finite(state.ema)
    assert int(state.step) == STEPS
    # The steps did something: the parameters moved.
    fresh = create_train_state(model, optim, jax.random.key(0))
    moved = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))), state.params, fresh.params)
    assert max(jax.tree_util.tree_leaves(moved)) > 0
