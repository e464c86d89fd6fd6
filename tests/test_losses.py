"""Stablemax cross-entropy: finite gradients everywhere, equal to the float64 formula elsewhere."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trm_jax.losses import log_stablemax, stablemax_cross_entropy

# Each value below passes through a handful of float32 roundings (the reciprocal, a sum of at
# most 12 terms, a division and a log): (12 + 4) * 2^-24 ~ 1e-6 relative. The float32 results
# are compared with the float64 formula at 4x that bound.
F32_RTOL = 4e-6
# bfloat16 logits are exactly representable in float32 and the loss is computed in float32, so
# the loss of bfloat16 inputs meets the same bound; their gradient is returned in bfloat16,
# which rounds it once more (unit roundoff of its 8-bit significand: 2^-8 relative).
GRAD_RTOL = {jnp.float32: F32_RTOL, jnp.bfloat16: F32_RTOL + 2.0**-8}

# Logits where the old formula's unused branch divided by zero (exactly 1), where the branches
# meet (exactly 0), and where either branch's terms are extreme.
SPECIAL = [0.0, 1.0, -1.0, 2.0, -2.0, 1e-30, -1e-30, 1e4, -1e4, 3e4, -3e4, 0.5]


def _reference(logits: np.ndarray, label: int) -> tuple[np.ndarray, np.ndarray]:
    """(cross-entropy, its gradient) of one row, in float64, from the formula on paper."""
    x = logits.astype(np.float64)
    s = np.where(x < 0, 1.0 / (1.0 - np.minimum(x, 0.0)), x + 1.0)
    ds = np.where(x < 0, 1.0 / np.square(1.0 - np.minimum(x, 0.0)), 1.0)
    total = s.sum()
    loss = np.log(total) - np.log(s[label])
    grad = ds / total
    grad[label] -= ds[label] / s[label]
    return loss, grad


def _loss_and_grad(logits: jax.Array, label: int) -> tuple[jax.Array, jax.Array]:
    def loss(x):
        return stablemax_cross_entropy(x[None, None], jnp.array([[label]]), jnp.array([[True]]))[0, 0]

    return jax.value_and_grad(loss)(logits)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("label", [0, 1, 4])
def test_gradient_is_finite_at_special_logits(dtype, label):
    for value in SPECIAL:
        logits = jnp.asarray([value, 1.0, -1.0, 0.0, 3.0], dtype)
        loss, grad = _loss_and_grad(logits, label)
        assert np.isfinite(float(loss)), (value, dtype)
        assert np.all(np.isfinite(np.asarray(grad, np.float32))), (value, dtype, grad)


def test_old_formula_had_a_nan_gradient_at_one():
    """The trap this guards against: a plain where whose unused branch divides by zero."""

    def old(x):
        s = jnp.where(x < 0, 1.0 / (1.0 - x + 1e-30), x + 1.0)
        return -jnp.log(s[3] / s.sum())

    assert np.isnan(np.asarray(jax.grad(old)(jnp.asarray([0.5, 1.0, -2.0, 3.0])))[1])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_equals_float64_formula(dtype):
    rng = np.random.default_rng(0)
    rows = [rng.normal(0.0, scale, 11) for scale in (0.1, 1.0, 5.0, 50.0) for _ in range(5)]
    rows.append(np.asarray(SPECIAL[:11]))
    for row in rows:
        logits = jnp.asarray(row, dtype)
        exact = np.asarray(logits, np.float64)  # the values the function actually receives
        for label in (0, 5, 10):
            loss, grad = _loss_and_grad(logits, label)
            ref_loss, ref_grad = _reference(exact, label)
            np.testing.assert_allclose(float(loss), ref_loss, rtol=F32_RTOL, atol=1e-7)
            scale = np.abs(ref_grad).max()
            np.testing.assert_allclose(
                np.asarray(grad, np.float64), ref_grad, rtol=GRAD_RTOL[dtype], atol=F32_RTOL * scale
            )


def test_values_are_those_of_the_reference_formula():
    """Only the gradient changed: forward values equal the reference's float32 formula bit for bit
    (its +1e-30 is below half an ulp of 1 - x >= 1 where it applies)."""

    def reference_formula(x):
        s = jnp.where(x < 0, 1.0 / (1.0 - x + 1e-30), x + 1.0)
        return jnp.log(s / jnp.sum(s, axis=-1, keepdims=True))

    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(0.0, 10.0, (64, 12)) * rng.choice([1e-3, 1.0, 1e3], (64, 1)), jnp.float32)
    x = x.at[0].set(jnp.asarray(SPECIAL, jnp.float32))
    for logits in (x, x.astype(jnp.bfloat16).astype(jnp.float32)):
        np.testing.assert_array_equal(
            np.asarray(jax.jit(log_stablemax)(logits)), np.asarray(jax.jit(reference_formula)(logits))
        )
