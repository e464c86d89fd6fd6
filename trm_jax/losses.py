"""Losses and metrics of the ACT loss head (the reference's ``ACTLossHead``).

``lm_loss`` sums over rows the mean token loss of each row (labels equal to -100 ignored);
``q_halt_loss`` is a summed BCE between the halt logit and "this row is exactly right"; the
total is ``lm_loss + 0.5 * (q_halt_loss + q_continue_loss)`` and is *not* divided by the
batch size (the train step divides by the global batch). Metrics count only rows that halted
this step and have labels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from trm_jax.config import TRMConfig
from trm_jax.data.loader import IGNORE_LABEL_ID  # noqa: F401 - also read as losses.IGNORE_LABEL_ID
from trm_jax.precision import at_least_float32

Array = jax.Array


def log_stablemax(logits: Array, axis: int = -1) -> Array:
    """log of stablemax: ``s(x) = x + 1 (x >= 0), 1 / (1 - x) (x < 0)``, normalised.

    The gradient is finite everywhere. ``jnp.where`` differentiates both branches at every
    element, so the reciprocal branch only ever sees inputs valid for it (``x < 0``, else 0):
    evaluated at ``x = 1`` it would divide by zero, and ``inf * 0`` is a NaN gradient (the
    reference adds ``1e-30`` and runs in float64, where ``1e60`` is still finite; in float32
    it is not). For ``x < 0`` the reference's ``1e-30`` is below half an ulp of ``1 - x >= 1``,
    so leaving it out changes no value.

    Computed in float32 for float32/bfloat16 logits (the reference casts to float64): measured
    per-token relative error against float64 at most 3.6e-7 (a few ulp), unbiased (the summed
    loss of 64x81 tokens within 5e-10; docs/fidelity.md), so the float64 cast is
    not reproduced.
    """
    negative = logits < 0
    safe_negative = jnp.where(negative, logits, 0.0)
    s = jnp.where(negative, 1.0 / (1.0 - safe_negative), logits + 1.0)
    return jnp.log(s / jnp.sum(s, axis=axis, keepdims=True))


def _token_nll(logprobs: Array, labels: Array, mask: Array) -> Array:
    safe = jnp.where(mask, labels, 0)
    picked = jnp.take_along_axis(logprobs, safe[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return -jnp.where(mask, picked, 0.0)


def stablemax_cross_entropy(logits: Array, labels: Array, mask: Array) -> Array:
    """Per-token stablemax cross-entropy [B, S] in (at least) float32, 0 where ``mask`` is False."""
    return _token_nll(log_stablemax(logits.astype(at_least_float32(logits.dtype))), labels, mask)


def softmax_cross_entropy(logits: Array, labels: Array, mask: Array) -> Array:
    """Per-token softmax cross-entropy [B, S] in (at least) float32, 0 where ``mask`` is False."""
    logits = logits.astype(at_least_float32(logits.dtype))
    return _token_nll(jax.nn.log_softmax(logits, axis=-1), labels, mask)


LOSS_FUNCTIONS = {
    "stablemax_cross_entropy": stablemax_cross_entropy,
    "softmax_cross_entropy": softmax_cross_entropy,
}


def row_metrics(config: TRMConfig, labels: Array, outputs: dict[str, Array]) -> dict[str, Array]:
    """Per-row [B] quantities of one step's outputs against ``labels`` [B, S] (-100 = ignored).

    ``preds`` [B, S] (argmax tokens), ``num_labels`` (non-ignored cells), ``accuracy`` (fraction
    of them right), ``exact`` (all of them right), ``lm_loss`` (the row's mean token loss;
    :func:`act_loss` sums it over rows).
    """
    logits = outputs["logits"]
    mask = labels != IGNORE_LABEL_ID
    loss_counts = mask.sum(-1)
    divisor = jnp.maximum(loss_counts, 1)[:, None].astype(at_least_float32(logits.dtype))
    preds = jnp.argmax(logits, axis=-1)
    is_correct = mask & (preds == labels)
    token_loss = LOSS_FUNCTIONS[config.loss_type](logits, labels, mask)
    return {
        "preds": preds,
        "num_labels": loss_counts,
        "accuracy": (is_correct / divisor).sum(-1),
        "exact": is_correct.sum(-1) == loss_counts,
        "lm_loss": (token_loss / divisor).sum(-1),
    }


def act_loss(
    config: TRMConfig, halted: Array, steps: Array, labels: Array, outputs: dict[str, Array]
) -> tuple[Array, dict[str, Array]]:
    """(total loss, metrics) of one ACT step.

    Args:
      halted, steps: of the carry *after* the step [B].
      labels: the rows' labels [B, S] (-100 = ignored).
      outputs: ``act_step`` outputs.

    Metrics (sums over valid rows, to be divided by ``count``): ``count``, ``accuracy``
    (per-row token accuracy), ``exact_accuracy``, ``q_halt_accuracy``, ``steps``, and the
    loss terms ``lm_loss``, ``q_halt_loss`` (+ ``q_continue_loss``).
    """
    rows = row_metrics(config, labels, outputs)
    seq_is_correct = rows["exact"]
    valid = halted & (rows["num_labels"] > 0)
    lm_loss = jnp.sum(rows["lm_loss"])
    q_halt = outputs["q_halt_logits"]
    q_halt_loss = jnp.sum(optax.sigmoid_binary_cross_entropy(q_halt, seq_is_correct.astype(q_halt.dtype)))
    total = lm_loss + 0.5 * q_halt_loss

    metrics = {
        "count": valid.sum(),
        "accuracy": jnp.sum(jnp.where(valid, rows["accuracy"], 0.0)),
        "exact_accuracy": (valid & seq_is_correct).sum(),
        "q_halt_accuracy": (valid & ((q_halt >= 0) == seq_is_correct)).sum(),
        "steps": jnp.sum(jnp.where(valid, steps, 0)),
        "lm_loss": lm_loss,
        "q_halt_loss": q_halt_loss,
    }
    if "target_q_continue" in outputs:
        q_continue_loss = jnp.sum(
            optax.sigmoid_binary_cross_entropy(outputs["q_continue_logits"], outputs["target_q_continue"])
        )
        total = total + 0.5 * q_continue_loss
        metrics["q_continue_loss"] = q_continue_loss
    metrics = {k: jax.lax.stop_gradient(v) for k, v in metrics.items()}
    return total, metrics
