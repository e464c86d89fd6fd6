"""The ACT (deep-supervision) step: reset halted rows, recurse, decide who halts.

All functions are pure: ``act_step(config, variables, carry, batch, rng, training=...)``
returns a new carry and the step's outputs; the halting / reset / exploration logic stays on
device (``jnp.where``), so the step can be jitted, sharded or pmapped as it is.

The carry survives from one training batch to the next: each slot (row) keeps working on its
own puzzle until it halts, and only then takes the new batch's row.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp

from trm_jax.config import TRMConfig
from trm_jax.model.network import (
    TRMNet,
    Variables,
    compute_dtype,
    from_recursion_layout,
    to_recursion_layout,
)
from trm_jax.model.recursion import deep_recursion

Array = jax.Array
Batch = dict[str, Array]  # inputs [B, S] int32, labels [B, S] int32, puzzle_identifiers [B]


@flax.struct.dataclass
class ACTCarry:
    """What survives between ACT steps (the reference's ``..._ACTV1Carry``)."""

    z_H: Array  # [B, total_len, D], compute dtype (the answer state y)
    z_L: Array  # [B, total_len, D], compute dtype (the latent z)
    steps: Array  # [B] int32: supervision steps taken on the current puzzle
    halted: Array  # [B] bool: the row takes a new puzzle at the next step
    current_data: Batch  # the batch rows each slot is working on


def initial_carry(config: TRMConfig, batch: Batch) -> ACTCarry:
    """A carry with every row halted, so the first step loads the whole batch."""
    size = batch["inputs"].shape[0]
    z = jnp.zeros((size, config.total_len, config.hidden_size), compute_dtype(config))
    return ACTCarry(
        z_H=z,
        z_L=z,
        steps=jnp.zeros((size,), jnp.int32),
        halted=jnp.ones((size,), jnp.bool_),
        current_data={k: jnp.zeros_like(v) for k, v in batch.items()},
    )


def _rows_where(flag: Array, new: Array, old: Array) -> Array:
    return jnp.where(flag.reshape((-1,) + (1,) * (old.ndim - 1)), new, old)


def reset_halted(config: TRMConfig, buffers: dict[str, Array], carry: ACTCarry, batch: Batch) -> ACTCarry:
    """Halted rows restart: z_H := H_init, z_L := L_init, steps := 0, data := batch rows."""
    dtype = compute_dtype(config)
    halted = carry.halted
    return ACTCarry(
        z_H=_rows_where(halted, buffers["H_init"].astype(dtype), carry.z_H),
        z_L=_rows_where(halted, buffers["L_init"].astype(dtype), carry.z_L),
        steps=jnp.where(halted, 0, carry.steps),
        halted=halted,
        current_data={k: _rows_where(halted, batch[k], v) for k, v in carry.current_data.items()},
    )


def gather_puzzle_rows(config: TRMConfig, buffers: dict[str, Array], puzzle_identifiers: Array) -> Array | None:
    """Rows of the puzzle-embedding table used by the batch ([B, ndim]); None without one."""
    if config.puzzle_emb_ndim == 0:
        return None
    return jnp.take(buffers["puzzle_emb"], puzzle_identifiers.astype(jnp.int32), axis=0)


def inner_forward(config: TRMConfig, params: Any, z_H: Array, z_L: Array, inputs: Array, puzzle_rows: Array | None):
    """Embedding, deep recursion and heads.

    Returns ((carry_z_H, carry_z_L), (logits, q_halt_logits, q_continue_logits)); the
    carry is stop-gradiented, the heads carry the gradient of the last H cycle.
    """
    model = TRMNet(config)

    def net_with(p):
        return lambda h, inj: model.apply({"params": p}, h, inj, method=TRMNet.reason)

    x = model.apply({"params": params}, inputs, puzzle_rows, method=TRMNet.embed)
    frozen = jax.tree_util.tree_map(jax.lax.stop_gradient, params)
    z_H, z_L, x = (to_recursion_layout(config, a) for a in (z_H, z_L, x))
    outs = deep_recursion(
        net_with(params),
        z_H,
        z_L,
        x,
        H_cycles=config.H_cycles,
        L_cycles=config.L_cycles,
        remat=config.remat,
        saved_activations=config.saved_activations,
        frozen_net=net_with(frozen),
    )
    z_H_out, carry_H, carry_L = (from_recursion_layout(config, a) for a in outs)
    heads = model.apply({"params": params}, z_H_out, method=TRMNet.heads)
    return (carry_H, carry_L), heads


def exploration_min_steps(config: TRMConfig, rng: Array, row_index: Array) -> Array:
    """Per-row minimum halting step: 0, or with probability ``halt_exploration_prob`` a
    uniform draw in [2, halt_max_steps].

    Each row's draw comes from ``fold_in(rng, row_index)``, so it depends on the row's
    position in the *global* batch only: a run gives the same draws on one device, sharded
    over many, or under pmap (where ``row_index`` is offset by the device's slice).
    """

    def draw(index):
        k_explore, k_steps = jax.random.split(jax.random.fold_in(rng, index))
        explore = jax.random.uniform(k_explore) < config.halt_exploration_prob
        return explore * jax.random.randint(k_steps, (), 2, config.halt_max_steps + 1, dtype=jnp.int32)

    return jax.vmap(draw)(row_index)


def advance(
    config: TRMConfig,
    params: Any,
    carry: ACTCarry,
    puzzle_rows: Array | None,
    rng: Array | None,
    *,
    training: bool,
    row_offset: Array | int = 0,
    row_stride: int = 1,
    min_halt_steps: Array | None = None,
) -> tuple[ACTCarry, dict[str, Array]]:
    """One ACT step on a carry whose halted rows were already reset.

    Split from :func:`act_step` so that a train step can differentiate with respect to
    ``params`` and the gathered ``puzzle_rows`` together. ``row_offset`` is the index of
    this call's first row in the global batch (pmap, microbatches) and ``row_stride`` the
    distance in the global batch between consecutive rows of the call (a microbatch takes
    every ``row_stride``-th row); see :func:`exploration_min_steps`.
    ``min_halt_steps`` [B] replaces the exploration draws (training only): a row may halt
    only from that step on. It replays another run's exploration, e.g. the official code's
    in the parity fixtures.
    """
    data = carry.current_data
    (z_H, z_L), (logits, q_halt, q_continue) = inner_forward(
        config, params, carry.z_H, carry.z_L, data["inputs"], puzzle_rows
    )
    outputs = {"logits": logits, "q_halt_logits": q_halt, "q_continue_logits": q_continue}

    steps = carry.steps + 1
    is_last_step = steps >= config.halt_max_steps
    halted = is_last_step
    if training and config.halt_max_steps > 1:
        q_halt_sg = jax.lax.stop_gradient(q_halt)
        if config.no_ACT_continue:
            halted = halted | (q_halt_sg > 0)
        else:
            halted = halted | (q_halt_sg > jax.lax.stop_gradient(q_continue))
        if min_halt_steps is None and config.halt_exploration_prob > 0:
            if rng is None:
                raise ValueError("act_step(training=True) with halt_exploration_prob > 0 needs an rng key")
            row_index = row_offset + row_stride * jnp.arange(steps.shape[0], dtype=jnp.int32)
            min_halt_steps = exploration_min_steps(config, rng, row_index)
        if min_halt_steps is not None:
            halted = halted & (steps >= min_halt_steps)
        if not config.no_ACT_continue:
            # Bootstrapped Q-continue target: the Q values one more step ahead, from the
            # carry this step produced (no replay buffer, no target network).
            _, (_, next_halt, next_continue) = inner_forward(
                config,
                jax.lax.stop_gradient(params),
                z_H,
                z_L,
                data["inputs"],
                None if puzzle_rows is None else jax.lax.stop_gradient(puzzle_rows),
            )
            outputs["target_q_continue"] = jax.nn.sigmoid(
                jnp.where(is_last_step, next_halt, jnp.maximum(next_halt, next_continue))
            )

    new_carry = ACTCarry(z_H=z_H, z_L=z_L, steps=steps, halted=halted, current_data=data)
    return new_carry, outputs


def act_step(
    config: TRMConfig, variables: Variables, carry: ACTCarry, batch: Batch, rng: Array | None = None, *, training: bool
) -> tuple[ACTCarry, dict[str, Array]]:
    """One ACT / supervision step: ``(new_carry, outputs)``.

    outputs: ``logits`` [B, S, V], ``q_halt_logits`` [B], ``q_continue_logits`` [B], and
    ``target_q_continue`` [B] when training with ``no_ACT_continue=False``.
    """
    carry = reset_halted(config, variables["buffers"], carry, batch)
    rows = gather_puzzle_rows(config, variables["buffers"], carry.current_data["puzzle_identifiers"])
    return advance(config, variables["params"], carry, rows, rng, training=training)


def evaluate_to_halt(
    config: TRMConfig, variables: Variables, batch: Batch, num_steps: int | None = None
) -> tuple[ACTCarry, dict[str, Array]]:
    """Runs evaluation-mode ACT steps from a fresh carry (``halt_max_steps`` by default).

    At evaluation every row runs the same number of steps; returns the final carry and the
    last step's outputs. ``num_steps`` may exceed ``halt_max_steps`` (deeper inference):
    rows then keep refining past the halting point instead of being reset.
    """
    num_steps = config.halt_max_steps if num_steps is None else num_steps
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    run_config = config if num_steps <= config.halt_max_steps else config.replace(halt_max_steps=num_steps)

    def step(carry, _):
        return act_step(run_config, variables, carry, batch, training=False)

    carry, outputs = step(initial_carry(config, batch), None)
    if num_steps > 1:
        # The outputs ride in the scan carry (each step replaces them) instead of being stacked
        # as scan outputs: only the last step's logits are ever held, whatever num_steps is.
        def body(state, _):
            new_carry, new_outputs = step(state[0], None)
            return (new_carry, new_outputs), None

        (carry, outputs), _ = jax.lax.scan(body, (carry, outputs), None, length=num_steps - 1)
    return carry, outputs
