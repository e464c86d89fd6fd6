"""The train state (one pytree) and the optimisation hyper-parameters.

Everything that determines the next step lives in :class:`TrainState`, so a checkpoint of it
(plus the data loader's position) resumes a run exactly: parameters, non-trained buffers
(H_init, L_init, the puzzle-embedding table), optimiser state, EMA, the ACT carry, the step
counter and the RNG key.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from trm_jax.config import OptimConfig, TRMConfig  # OptimConfig: re-exported (it lived here)
from trm_jax.model import act
from trm_jax.model.network import Variables, init_variables
from trm_jax.train import ema as ema_lib
from trm_jax.train import optim

Array = jax.Array


def schedule(config: OptimConfig, base_lr: float) -> optax.Schedule:
    return optim.warmup_cosine_schedule(base_lr, config.lr_warmup_steps, config.total_steps, config.lr_min_ratio)


def make_optimizer(config: OptimConfig) -> optax.GradientTransformation:
    """AdamATan2 with decoupled weight decay on the warm-up + cosine schedule."""
    return optim.adam_atan2(
        schedule(config, config.lr), b1=config.beta1, b2=config.beta2, weight_decay=config.weight_decay
    )


def make_puzzle_optimizer(config: OptimConfig) -> optim.SparseSignSGD:
    """Sparse sign-SGD of the puzzle-embedding table, on the same schedule shape."""
    return optim.SparseSignSGD(schedule(config, config.puzzle_emb_lr), config.puzzle_emb_weight_decay)


@flax.struct.dataclass
class TrainState:
    """All state of a training run, as one pytree."""

    step: Array  # int32 scalar: optimiser updates applied so far
    params: Any
    buffers: dict[str, Array]  # H_init, L_init, puzzle_emb (not trained by the optimiser)
    opt_state: Any
    ema: Any  # EMA of params (a copy of params when EMA is disabled; then unused)
    carry: act.ACTCarry
    rng: Array  # typed PRNG key

    def variables(self, use_ema: bool = False) -> Variables:
        """Model variables for :mod:`trm_jax.model.act` (EMA weights if ``use_ema``)."""
        return {"params": self.ema if use_ema else self.params, "buffers": self.buffers}


def example_batch(model_config: TRMConfig, batch_size: int) -> dict[str, Array]:
    """An all-zero batch of the right shapes and dtypes (to size the carry)."""
    return {
        "inputs": jnp.zeros((batch_size, model_config.seq_len), jnp.int32),
        "labels": jnp.zeros((batch_size, model_config.seq_len), jnp.int32),
        "puzzle_identifiers": jnp.zeros((batch_size,), jnp.int32),
    }


def create_train_state(
    model_config: TRMConfig,
    optim_config: OptimConfig,
    rng: Array,
    variables: Variables | None = None,
    batch_size: int | None = None,
) -> TrainState:
    """A fresh train state; ``variables`` (e.g. from a PyTorch checkpoint) replace the init.

    ``batch_size`` is the global batch the carry is sized for (default: the optimiser's
    ``global_batch_size``). Pure: ``jax.jit(..., out_shardings=...)`` of it creates the state
    directly sharded (see :mod:`trm_jax.train.parallel`).
    """
    init_rng, state_rng = jax.random.split(rng)
    if variables is None:
        variables = init_variables(model_config, init_rng)
    params = variables["params"]
    batch_size = batch_size or optim_config.global_batch_size
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        buffers=dict(variables["buffers"]),
        opt_state=make_optimizer(optim_config).init(params),
        ema=ema_lib.ema_init(params),
        carry=act.initial_carry(model_config, example_batch(model_config, batch_size)),
        rng=state_rng,
    )
