"""Exponential moving average (EMA) of the trainable parameters, as plain pytree functions.

The EMA is one more entry of the train state. Only trainable parameters are averaged: the caller
passes the parameter pytree, not buffers (H_init, L_init) nor the puzzle-embedding table.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from trm_jax.precision import at_least_float32

__all__ = ["ema_init", "ema_update"]


def ema_init(params):
    """Returns the initial EMA: a copy of ``params`` (new buffers, so donation is safe)."""
    return jax.tree.map(lambda p: jnp.array(p, copy=True), params)


def ema_update(ema, params, rate: float | jax.Array = 0.999):
    """Returns ``rate * ema + (1 - rate) * params`` in (at least) float32, cast to ``ema``'s dtypes.

    Called after every optimiser step with the updated parameters. ``ema`` and ``params`` must have
    the same tree structure.
    """

    # For a Python float, 1 - rate is formed in float64 before the cast, as the reference does
    # (float32(1 - 0.999) differs from 1 - float32(0.999) in the last bits).
    def mix(e, p):
        dtype = at_least_float32(e.dtype)
        if isinstance(rate, (int, float)):
            keep, mix_in = jnp.asarray(rate, dtype), jnp.asarray(1.0 - rate, dtype)
        else:
            keep = jnp.asarray(rate, dtype)
            mix_in = 1.0 - keep
        mixed = mix_in * p.astype(dtype) + keep * e.astype(dtype)
        return mixed.astype(e.dtype)

    return jax.tree.map(mix, ema, params)
