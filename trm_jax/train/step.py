"""Pure train and eval steps: ``train_step(state, batch) -> (state, metrics)``.

The step functions here are plain Python functions of (config, state, batch); callers pick
the parallelism: :mod:`trm_jax.train.parallel` jits them over a device mesh (the main path)
or pmaps them (``axis_name`` set: cross-device sums are then explicit collectives).

Metrics are returned as on-device sums (``count``, ``accuracy``, ``exact_accuracy``,
``q_halt_accuracy``, ``steps``, ``lm_loss``, ``q_halt_loss``) plus ``loss`` (the optimised
value: total / global batch) and ``lr``; :func:`trm_jax.train.metrics.sums_to_means` turns them
into means on the host.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from trm_jax.config import TRMConfig
from trm_jax.losses import act_loss
from trm_jax.model import act
from trm_jax.train import ema as ema_lib
from trm_jax.train.state import OptimConfig, TrainState, make_optimizer, make_puzzle_optimizer, schedule

Array = jax.Array
Batch = dict[str, Array]


def _global_batch_and_offset(local_batch: int, axis_name: str | None) -> tuple[Any, Any]:
    if axis_name is None:
        return local_batch, 0
    devices = jax.lax.psum(1, axis_name)
    return local_batch * devices, jax.lax.axis_index(axis_name) * local_batch


def compute_gradients(
    model_config: TRMConfig,
    state: TrainState,
    batch: Batch,
    step_rng: Array,
    *,
    axis_name: str | None = None,
    microbatches: int = 1,
):
    """Loss, new carry, metric sums and gradients of one training ACT step.

    Returns ``(loss, new_carry, metrics, grads, ids, row_grads)``: ``loss`` is the total
    divided by the global batch (as the reference optimises), ``grads`` its gradient w.r.t.
    the parameters (summed over devices under pmap), ``row_grads`` [B, ndim] the gradient of
    the gathered puzzle-embedding rows whose ids are ``ids`` (None without puzzle embeddings).

    ``microbatches`` > 1 splits the (local) batch into that many chunks of equal size, chunk
    ``c`` holding rows ``c, c + microbatches, c + 2 * microbatches, ...`` (so a batch sharded
    by rows over a mesh stays evenly sharded in every chunk), runs them one after the other
    in a ``jax.lax.scan`` and sums their losses, metrics and gradients: the same values up to
    the order of the float sums (rows are independent; exploration draws follow each row's
    global index), with the activations of one chunk alive at a time.
    """
    local_batch = batch["inputs"].shape[0]
    global_batch, row_offset = _global_batch_and_offset(local_batch, axis_name)
    carry = act.reset_halted(model_config, state.buffers, state.carry, batch)
    ids = carry.current_data["puzzle_identifiers"]
    rows = act.gather_puzzle_rows(model_config, state.buffers, ids)

    def gradients_of(carry, rows, offset, stride):
        def loss_fn(params, rows):
            new_carry, outputs = act.advance(
                model_config, params, carry, rows, step_rng, training=True, row_offset=offset, row_stride=stride
            )
            loss, metrics = act_loss(
                model_config, new_carry.halted, new_carry.steps, new_carry.current_data["labels"], outputs
            )
            return loss / global_batch, (new_carry, metrics)

        (loss, (new_carry, metrics)), (grads, row_grads) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
            state.params, rows
        )
        return (loss, metrics, grads), (new_carry, row_grads)

    if microbatches == 1:
        (loss, metrics, grads), (new_carry, row_grads) = gradients_of(carry, rows, row_offset, 1)
    else:
        (loss, metrics, grads), (new_carry, row_grads) = _sum_over_microbatches(
            gradients_of, carry, rows, row_offset, microbatches
        )
    if axis_name is not None:
        grads, loss, metrics = jax.lax.psum((grads, loss, metrics), axis_name)
    return loss, new_carry, metrics, grads, ids, row_grads


def _sum_over_microbatches(gradients_of, carry: act.ACTCarry, rows: Array | None, row_offset: Any, microbatches: int):
    """``gradients_of(carry, rows, offset, stride)`` over strided chunks of the rows: the sums
    of its first output, its second output reassembled in the original row order."""
    local_batch = carry.steps.shape[0]
    if microbatches < 1 or local_batch % microbatches:
        raise ValueError(
            f"microbatches={microbatches}: expected a positive divisor of the per-device batch {local_batch}"
        )

    def to_chunks(x):  # [B, ...] -> [chunks, B / chunks, ...], chunk c = rows c::chunks
        return jnp.swapaxes(x.reshape((local_batch // microbatches, microbatches) + x.shape[1:]), 0, 1)

    def from_chunks(x):
        return jnp.swapaxes(x, 0, 1).reshape((local_batch,) + x.shape[2:])

    chunked = jax.tree_util.tree_map(to_chunks, (carry, rows))
    one_chunk = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), chunked)
    sums_shape, _ = jax.eval_shape(lambda c, r: gradients_of(c, r, row_offset, microbatches), *one_chunk)
    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), sums_shape)

    def chunk(sums, inputs):
        index, (chunk_carry, chunk_rows) = inputs
        chunk_sums, per_row = gradients_of(chunk_carry, chunk_rows, row_offset + index, microbatches)
        return jax.tree_util.tree_map(jnp.add, sums, chunk_sums), per_row

    sums, per_row = jax.lax.scan(chunk, zeros, (jnp.arange(microbatches, dtype=jnp.int32), chunked))
    return sums, jax.tree_util.tree_map(from_chunks, per_row)


def train_step(
    model_config: TRMConfig, optim_config: OptimConfig, state: TrainState, batch: Batch, *, axis_name: str | None = None
) -> tuple[TrainState, dict]:
    """One training ACT step and one optimiser update.

    The loss is differentiated with respect to the parameters and the gathered puzzle
    embedding rows; the parameters take an AdamATan2 step, the touched rows of the puzzle
    table a sparse sign-SGD step (gradients summed per id over the global batch), then the
    EMA is updated. H_init / L_init are never updated.
    """
    rng, step_rng = jax.random.split(state.rng)
    loss, new_carry, metrics, grads, ids, row_grads = compute_gradients(
        model_config, state, batch, step_rng, axis_name=axis_name, microbatches=optim_config.microbatches
    )

    tx = make_optimizer(optim_config)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    buffers = dict(state.buffers)
    if model_config.puzzle_emb_ndim > 0:
        if axis_name is not None:
            ids = jax.lax.all_gather(ids, axis_name, tiled=True)
            row_grads = jax.lax.all_gather(row_grads, axis_name, tiled=True)
        buffers["puzzle_emb"] = make_puzzle_optimizer(optim_config).update(
            state.buffers["puzzle_emb"], ids, row_grads, state.step
        )

    ema = ema_lib.ema_update(state.ema, params, optim_config.ema_rate) if optim_config.ema else params
    new_state = TrainState(
        step=state.step + 1, params=params, buffers=buffers, opt_state=opt_state, ema=ema, carry=new_carry, rng=rng
    )
    metrics = dict(metrics, loss=loss, lr=schedule(optim_config, optim_config.lr)(state.step))
    return new_state, metrics


def eval_step(
    model_config: TRMConfig,
    state: TrainState,
    batch: Batch,
    *,
    use_ema: bool = True,
    num_steps: int | None = None,
    axis_name: str | None = None,
) -> tuple[dict, dict]:
    """Evaluation of one batch: every row runs ``num_steps`` (default halt_max_steps) ACT steps.

    Returns (predictions, metric sums): predictions hold ``preds`` [B, S] and
    ``q_halt_logits`` [B] (for the ARC evaluator); rows whose labels are all ignored
    (padding) count in no metric.
    """
    variables = state.variables(use_ema=use_ema)
    carry, outputs = act.evaluate_to_halt(model_config, variables, batch, num_steps)
    loss, metrics = act_loss(model_config, carry.halted, carry.steps, carry.current_data["labels"], outputs)
    global_batch, _ = _global_batch_and_offset(batch["inputs"].shape[0], axis_name)
    metrics = dict(metrics, loss=loss / global_batch)
    if axis_name is not None:
        metrics = jax.lax.psum(metrics, axis_name)
    predictions = {
        "preds": jnp.argmax(outputs["logits"], axis=-1).astype(jnp.int32),
        "q_halt_logits": outputs["q_halt_logits"],
    }
    return predictions, metrics


def make_train_step(model_config: TRMConfig, optim_config: OptimConfig, **kwargs):
    """``train_step`` with its configs bound: ``(state, batch) -> (state, metrics)``."""
    return functools.partial(train_step, model_config, optim_config, **kwargs)


def make_eval_step(model_config: TRMConfig, **kwargs):
    """``eval_step`` with its config bound: ``(state, batch) -> (predictions, metrics)``."""
    return functools.partial(eval_step, model_config, **kwargs)
