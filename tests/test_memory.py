"""Activation memory of the train step, from XLA's compiled memory analysis (no run).

The T-1 gradient-free cycles keep no activations for the backward pass, so the step's
temporary memory does not grow with H_cycles; keeping only the matrix products' outputs of
the differentiated cycle, or nothing (remat), shrinks it.
"""

from __future__ import annotations

import jax
import pytest

from trm_jax.train import step as step_lib
from trm_jax.train.state import create_train_state, example_batch
from trm_test_utils import tiny_model_config, tiny_optim_config


def step_temp_bytes(**model_overrides) -> int:
    model_config = tiny_model_config(**{"seq_len": 64, "hidden_size": 64, "L_cycles": 3, **model_overrides})
    optim_config = tiny_optim_config(global_batch_size=32)
    state = jax.eval_shape(lambda: create_train_state(model_config, optim_config, jax.random.key(0)))
    batch = jax.eval_shape(lambda: example_batch(model_config, 32))
    compiled = (
        jax.jit(step_lib.make_train_step(model_config, optim_config), donate_argnums=0).lower(state, batch).compile()
    )
    return compiled.memory_analysis().temp_size_in_bytes


def test_memory_is_flat_in_H_cycles_and_remat_saves_memory():
    one_cycle = step_temp_bytes(H_cycles=1)
    many_cycles = step_temp_bytes(H_cycles=6)
    # Only the scan's loop counters may differ.
    assert abs(many_cycles - one_cycle) < 4096, (one_cycle, many_cycles)
    remat = step_temp_bytes(H_cycles=6, remat=True)
    assert remat < 0.5 * many_cycles, (remat, many_cycles)


@pytest.mark.parametrize("model", [dict(), dict(mlp_t=True, pos_encodings="none")], ids=["attention", "mlp_t"])
def test_keeping_only_matmul_outputs_saves_memory(model):
    """``saved_activations="matmuls"`` (the default) keeps the matrix products' outputs of the
    differentiated cycle and recomputes the element-wise work: measured 55% (attention) and
    46% (mlp_t) of the temporary memory of keeping everything; full remat keeps less still."""
    everything = step_temp_bytes(H_cycles=2, saved_activations="all", **model)
    matmuls = step_temp_bytes(H_cycles=2, saved_activations="matmuls", **model)
    remat = step_temp_bytes(H_cycles=2, remat=True, **model)
    assert remat < matmuls < 0.7 * everything, (remat, matmuls, everything)


@pytest.mark.parametrize("model", [dict(), dict(mlp_t=True, pos_encodings="none")], ids=["attention", "mlp_t"])
def test_keeping_only_wide_matmul_outputs_saves_more(model):
    """``saved_activations="wide_matmuls"`` also recomputes the products that contract over
    fewer than 128 elements: with hidden size 128 and 64 + prefix positions, the token mixing
    over the sequence (mlp_t) or the attention scores and weighted values, while the channel
    products over the hidden size are kept. So it keeps less than ``"matmuls"`` and more than
    full remat."""
    sizes = dict(H_cycles=2, hidden_size=128, **model)
    matmuls = step_temp_bytes(saved_activations="matmuls", **sizes)
    wide = step_temp_bytes(saved_activations="wide_matmuls", **sizes)
    remat = step_temp_bytes(remat=True, **sizes)
    assert remat < wide < matmuls, (remat, wide, matmuls)


def eval_temp_bytes(num_steps: int) -> int:
    model_config = tiny_model_config(seq_len=64, hidden_size=64, vocab_size=512, halt_max_steps=16)
    optim_config = tiny_optim_config(global_batch_size=32)
    state = jax.eval_shape(lambda: create_train_state(model_config, optim_config, jax.random.key(0)))
    batch = jax.eval_shape(lambda: example_batch(model_config, 32))
    compiled = jax.jit(step_lib.make_eval_step(model_config, num_steps=num_steps)).lower(state, batch).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_eval_memory_does_not_grow_with_ACT_steps():
    """Evaluation keeps the last step's outputs only: 16 ACT steps need what 2 need, although
    16 steps of logits (32 x 64 x 512 float32 = 4 MiB each) would be 60 MiB more if stacked."""
    two, sixteen = eval_temp_bytes(2), eval_temp_bytes(16)
    assert abs(sixteen - two) < 64 * 1024, (two, sixteen)
