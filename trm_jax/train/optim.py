"""Optimisers of TRM training: AdamATan2, the warm-up + cosine schedule and sparse sign-SGD.

All functions are pure and jittable and work on arbitrary pytrees, so they can be used under a
sharded ``jax.jit`` or ``jax.pmap`` unchanged.

Step convention (shared by everything here and matching the reference trainer): the reference
increments its step counter *before* it sets the learning rate, so its first optimiser step uses
``lr_lambda(1)``. Our schedules are ordinary ``optax.Schedule``s of optax's ``count`` (the number of
updates already applied, 0 at the first update) and evaluate the reference formula at ``count + 1``.
The Adam bias corrections use ``t = count + 1`` as well.

Precision: the reference computes its learning rate in Python (float64) and hands it to float32
kernels; here it is computed in float32 inside the jitted step (float64 only for a float64
model with ``jax_enable_x64``). JAX without x64 has no float64 arithmetic, and computing it on
the host would move the step counter out of the jitted step. The cost, measured against the
float64 value rounded to float32 over 100k steps (docs/fidelity.md):
during warm-up 1 ulp at 0.3% of the steps and a constant lr after it (``lr_min_ratio=1``, the
paper's commands); with a cosine decay up to 7 ulp (4.6e-7 relative) at ~60% of the steps;
``1 - lr * weight_decay`` differs by at most 1 ulp at under 1% of the steps. All of it is
below the lockstep noise floor.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from trm_jax.precision import at_least_float32

__all__ = [
    "ScaleByAdamATan2State",
    "scale_by_adam_atan2",
    "adam_atan2",
    "atan2_nonnegative_x",
    "reference_lr_lambda",
    "warmup_cosine_schedule",
    "sparse_signsgd_update",
    "SparseSignSGD",
]


class ScaleByAdamATan2State(NamedTuple):
    """State of :func:`scale_by_adam_atan2`: update count and float32 first/second moments."""

    count: jax.Array  # int32 scalar, number of updates already applied
    mu: optax.Updates
    nu: optax.Updates


_TAN_PI_8 = 0.41421356237309503
_PI_4 = math.pi / 4
# Cephes' atanf coefficients: atan(z) ~ z + z^3 P(z^2) for |z| <= tan(pi/8).
_ATAN_COEFFS = (8.05374449538e-2, -1.38776856032e-1, 1.99777106478e-1, -3.33329491539e-1)


def atan2_nonnegative_x(y: jax.Array, x: jax.Array) -> jax.Array:
    """``atan2(y, x)`` for ``x >= 0`` (as AdamATan2's denominator is), from element-wise
    arithmetic only; float64 inputs take ``jnp.arctan2``.

    XLA's CPU backend does not vectorise ``atan2`` (on a 2-core Xeon: 44 ms for 5.5M float32
    values, the size of the Sudoku model, against 1.5 ms for ``exp``), so in the optimiser
    update it took most of the update's time. This form vectorises
    everywhere: both arguments reduced to ``num = min(|y|, x) <= den = max(|y|, x)``; for
    ``num / den > tan(pi/8)`` the argument is ``(num - den) / (num + den)`` (from ``num`` and
    ``den``, not from their rounded ratio) and pi/4 is added back; then Cephes'
    degree-9 odd polynomial, the result reflected about pi/4 when ``|y| > x``, with the
    multiple of pi/4 split in two (hi + lo) so that the constant adds no rounding, and the
    sign of ``y``. Accuracy (``tests/test_optim.py``, against float64): within 2.5 ulp where
    the result is a normal float32 (XLA's ``atan2``: 1.4 ulp), which moves ``p - lr * d`` by
    less than the rounding of that subtraction; ``atan2(0, 0) = 0``; NaN in, NaN out.
    """
    dtype = jnp.result_type(y, x)
    if dtype == jnp.float64:
        return jnp.arctan2(y, x)
    pi_4_hi = np.asarray(_PI_4, dtype)
    pi_4_lo = np.asarray(_PI_4 - float(pi_4_hi), dtype)
    magnitude = jnp.abs(y)
    num, den = jnp.minimum(magnitude, x), jnp.maximum(magnitude, x)
    reduced = num > _TAN_PI_8 * den
    z = jnp.where(reduced, (num - den) / (num + den), num / jnp.where(den > 0, den, 1))
    z2 = z * z
    poly = jnp.asarray(_ATAN_COEFFS[0], dtype)
    for c in _ATAN_COEFFS[1:]:
        poly = poly * z2 + c
    atan_z = poly * z2 * z + z
    swapped = magnitude > x  # atan2(|y|, x) = pi/2 - atan(x / |y|)
    quarters = jnp.where(reduced, 1.0, 0.0).astype(dtype)
    quarters = jnp.where(swapped, 2 - quarters, quarters)
    atan_z = jnp.where(swapped, -atan_z, atan_z)
    out = jnp.copysign(quarters * pi_4_hi + (atan_z + quarters * pi_4_lo), y)
    return jnp.where(jnp.isnan(y) | jnp.isnan(x), jnp.nan, out).astype(dtype)


def scale_by_adam_atan2(b1: float = 0.9, b2: float = 0.95) -> optax.GradientTransformation:
    """Direction of the ``adam-atan2`` 0.0.3 kernel, without learning rate or weight decay.

    With ``t = count + 1``::

        m = m + (1 - b1) * (g - m)
        v = v + (1 - b2) * (g**2 - v)
        out = atan2(m, sqrt(v) / sqrt(1 - b2**t)) / (1 - b1**t)

    There is no epsilon: atan2 is bounded, so a zero second moment is harmless. Moments are kept
    in float32 for bfloat16/float32 parameters (float64 for float64 ones); the output has the
    gradient's dtype.
    """
    if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
        raise ValueError(f"scale_by_adam_atan2: betas must lie in [0, 1), got b1={b1}, b2={b2}")

    def init_fn(params: optax.Params) -> ScaleByAdamATan2State:
        def zeros(p):
            return jnp.zeros(jnp.shape(p), at_least_float32(jnp.result_type(p)))

        return ScaleByAdamATan2State(
            count=jnp.zeros((), jnp.int32),
            mu=jax.tree.map(zeros, params),
            nu=jax.tree.map(zeros, params),
        )

    def update_fn(updates, state: ScaleByAdamATan2State, params=None):
        del params
        count = optax.safe_int32_increment(state.count)

        # The kernel's lerp(m, g, 1 - b1) with 1 - b1 formed in float64, as Python floats are here.
        mu = jax.tree.map(lambda g, m: m + (1.0 - b1) * (g.astype(m.dtype) - m), updates, state.mu)
        nu = jax.tree.map(lambda g, v: v + (1.0 - b2) * (jnp.square(g.astype(v.dtype)) - v), updates, state.nu)

        def direction(g, m, v):
            t = count.astype(m.dtype)  # the moments' dtype: float32 unless the model is float64
            bias_correction1 = 1.0 - jnp.power(jnp.asarray(b1, m.dtype), t)
            bias_correction2_sqrt = jnp.sqrt(1.0 - jnp.power(jnp.asarray(b2, m.dtype), t))
            d = atan2_nonnegative_x(m, jnp.sqrt(v) / bias_correction2_sqrt) / bias_correction1
            return d.astype(g.dtype)

        out = jax.tree.map(direction, updates, mu, nu)
        return out, ScaleByAdamATan2State(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def adam_atan2(
    learning_rate: float | optax.Schedule,
    b1: float = 0.9,
    b2: float = 0.95,
    weight_decay: float = 0.1,
) -> optax.GradientTransformation:
    """AdamATan2 with decoupled weight decay, as the ``adam-atan2`` 0.0.3 CUDA kernel computes it.

    With ``lr`` the (scheduled) learning rate of this update, ``optax.apply_updates`` gives::

        p = p * (1 - lr * wd) - lr / (1 - b1**t) * atan2(m, sqrt(v) / sqrt(1 - b2**t))

    i.e. the decay acts on the old parameter and is scaled by the scheduled lr. ``learning_rate``
    may be a float or an ``optax.Schedule`` of the update count (see the module docstring).
    Requires ``params`` in ``update``.
    """
    if weight_decay < 0:
        raise ValueError(f"adam_atan2: weight_decay must be >= 0, got {weight_decay}")
    return optax.chain(
        scale_by_adam_atan2(b1, b2),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )


def reference_lr_lambda(
    step: int | jax.Array,
    base_lr: float,
    warmup_steps: int,
    total_steps: int,
    min_ratio: float = 1.0,
    num_cycles: float = 0.5,
) -> jax.Array:
    """The reference's warm-up + cosine learning rate at its (1-based) step number ``step``.

    ``base_lr * step / warmup_steps`` during warm-up, then
    ``base_lr * (min_ratio + max(0, (1 - min_ratio) * 0.5 * (1 + cos(pi * num_cycles * 2 * progress))))``
    with ``progress = (step - warmup_steps) / (total_steps - warmup_steps)``.
    """
    step = jnp.asarray(step, jnp.float32)
    warm = base_lr * step / float(max(1, warmup_steps))
    progress = (step - warmup_steps) / float(max(1, total_steps - warmup_steps))
    cosine = (1.0 - min_ratio) * 0.5 * (1.0 + jnp.cos(math.pi * float(num_cycles) * 2.0 * progress))
    decayed = base_lr * (min_ratio + jnp.maximum(0.0, cosine))
    return jnp.where(step < warmup_steps, warm, decayed)


def warmup_cosine_schedule(
    base_lr: float,
    warmup_steps: int,
    total_steps: int,
    min_ratio: float = 1.0,
    num_cycles: float = 0.5,
) -> optax.Schedule:
    """Linear warm-up from 0 over ``warmup_steps``, then cosine to ``base_lr * min_ratio``.

    Returns an ``optax.Schedule`` of the update count ``count`` (0 at the first update) whose value
    is :func:`reference_lr_lambda` at ``count + 1``, which is the lr the reference uses for that
    update. So the first update uses ``base_lr / warmup_steps``, not 0.
    """
    if warmup_steps < 0 or total_steps < 0:
        raise ValueError(
            f"warmup_cosine_schedule: warmup_steps and total_steps must be >= 0, got {warmup_steps} and {total_steps}"
        )

    def schedule(count: int | jax.Array) -> jax.Array:
        return reference_lr_lambda(
            jnp.asarray(count, jnp.int32) + 1, base_lr, warmup_steps, total_steps, min_ratio, num_cycles
        )

    return schedule


def sparse_signsgd_update(
    table: jax.Array,
    ids: jax.Array,
    row_grads: jax.Array,
    lr: float | jax.Array,
    weight_decay: float | jax.Array,
) -> jax.Array:
    """One sparse sign-SGD step with decoupled weight decay on an embedding table.

    ``table`` [N, D]; ``ids`` [B] int, the row each batch element used; ``row_grads`` [B, D], the
    gradient of the gathered rows. Gradients of repeated ids are summed *before* the sign; every
    touched row becomes ``p * (1 - lr * wd) - lr * sign(g)``; untouched rows are left as they are
    (not decayed). Shapes are static, so this is jittable; under a data-parallel jit pass the
    global (sharded) ``ids`` and ``row_grads`` and XLA gathers.
    """
    if table.ndim != 2 or ids.ndim != 1 or row_grads.shape != (ids.shape[0], table.shape[1]):
        raise ValueError(
            "sparse_signsgd_update: expected table [N, D], ids [B], row_grads [B, D]; got "
            f"table {table.shape}, ids {ids.shape}, row_grads {row_grads.shape}"
        )
    # Sum the gradients of equal ids with a [B, B] match matrix rather than a scatter into a
    # zero table: the work and memory traffic stay O(B * (B + D)), independent of the table
    # size (ARC's table has ~1M rows), and the donated table is updated in place.
    ids = ids.astype(jnp.int32)
    dtype = at_least_float32(table.dtype)
    same_id = (ids[:, None] == ids[None, :]).astype(dtype)
    grad_sum = jnp.dot(same_id, row_grads.astype(dtype), precision=jax.lax.Precision.HIGHEST)
    lr = jnp.asarray(lr, dtype)
    decay = 1.0 - lr * jnp.asarray(weight_decay, dtype)
    rows = jnp.take(table, ids, axis=0).astype(dtype)
    updated = (rows * decay - lr * jnp.sign(grad_sum)).astype(table.dtype)
    # Repeated ids write identical rows, so the order of the scatter does not matter.
    return table.at[ids].set(updated, unique_indices=False)


class SparseSignSGD(NamedTuple):
    """Sparse sign-SGD of the puzzle-embedding table with its own lr schedule.

    ``schedule`` is a float or an ``optax.Schedule`` of the update count (0 at the first update;
    use :func:`warmup_cosine_schedule` to follow the reference). The step count lives in the
    caller's train state (the train step counter before this update), so this object holds no
    state and is safe to close over in a jitted step.
    """

    schedule: float | optax.Schedule
    weight_decay: float

    def learning_rate(self, step: int | jax.Array) -> jax.Array:
        """The learning rate used by the update made when ``step`` updates were already applied."""
        if callable(self.schedule):
            return jnp.asarray(self.schedule(step), jnp.float32)
        return jnp.asarray(self.schedule, jnp.float32)

    def update(self, table: jax.Array, ids: jax.Array, row_grads: jax.Array, step: int | jax.Array) -> jax.Array:
        """Returns the table after one update with these rows' gradients.

        ``step`` is the number of updates already applied (0 for the first one), the same count
        optax passes to schedules, so AdamATan2 and this optimiser see the same lr step.
        """
        return sparse_signsgd_update(table, ids, row_grads, self.learning_rate(step), self.weight_decay)
