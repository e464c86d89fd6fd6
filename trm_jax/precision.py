"""The precision policy: which dtype each part of the computation uses.

The official code keeps parameters, norms, RoPE, losses, optimiser moments and the EMA in
float32 and runs the matrix products in the forward dtype (bfloat16 for the paper's runs).
trm-jax does the same, and additionally runs everything in float64 when the forward dtype is
float64 (with ``jax_enable_x64``): a ground truth against which float32 results and
multi-device sums are compared, since float32 rounding is not the same on every CPU.

The rule is one function: "at least float32". For bfloat16 and float32 computations it is
float32 (the official behaviour, bit for bit); for float64 it is float64.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def at_least_float32(dtype: jnp.dtype) -> jnp.dtype:
    """``dtype`` promoted to at least float32: float32 for bfloat16/float32, float64 for float64."""
    return jnp.promote_types(dtype, jnp.float32)


def x64_enabled() -> bool:
    """Whether JAX creates 64-bit arrays (``JAX_ENABLE_X64=1`` or ``jax_enable_x64``)."""
    return bool(jax.config.read("jax_enable_x64"))
