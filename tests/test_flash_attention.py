"""The Pallas flash-attention kernel for TPU (trm_jax.model.flash_attention) against XLA's
attention, on CPU through Pallas' TPU interpret mode.

Tolerances come from float64: each float32 implementation is compared with a float64 ground
truth, and the kernel must be as close to it as XLA's own attention is (within a small
factor), in values and in the gradients of q, k and v. A wrong mask, scale, padding or layout
shows as an error orders of magnitude above float32 rounding.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trm_jax.model.flash_attention import padded_length, tpu_flash_attention

pltpu = pytest.importorskip("jax.experimental.pallas.tpu")
XLA = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="xla")  # noqa: E731
# The kernel may round differently from XLA's einsums (blockwise online softmax), not worse
# than this factor times XLA's own float32 error.
ERROR_FACTOR = 4.0


def attention_float64(q, k, v, cotangent):
    """Output of attention and the gradients of ``sum(output * cotangent)``, in numpy float64."""
    q, k, v, ct = (np.asarray(a, np.float64) for a in (q, k, v, cotangent))
    scale = 1.0 / np.sqrt(q.shape[-1])
    scores = np.einsum("bthd,bshd->bhts", q, k) * scale
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out = np.einsum("bhts,bshd->bthd", probs, v)
    d_probs = np.einsum("bthd,bshd->bhts", ct, v)
    d_scores = probs * (d_probs - (d_probs * probs).sum(-1, keepdims=True))
    dq = np.einsum("bhts,bshd->bthd", d_scores, k) * scale
    dk = np.einsum("bhts,bthd->bshd", d_scores, q) * scale
    dv = np.einsum("bhts,bthd->bshd", probs, ct)
    return out, (dq, dk, dv)


def value_and_grads(attention, q, k, v, cotangent):
    def loss(q, k, v):
        return jnp.sum(attention(q, k, v) * cotangent)

    return jax.jit(attention)(q, k, v), jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)


@pytest.mark.parametrize(
    "shape",
    [(2, 97, 2, 16), (1, 200, 2, 32), (2, 128, 1, 64)],
    ids=["sudoku_len_padded", "two_blocks_padded", "one_block_exact"],
)
def test_kernel_is_as_accurate_as_xla(shape):
    """Sequence lengths that need padding to the 128-position block (97: Sudoku + prefix; 200:
    two blocks) and one that does not."""
    assert padded_length(shape[1]) % 128 == 0
    keys = jax.random.split(jax.random.key(0), 4)
    q, k, v, ct = (2.0 * jax.random.normal(key, shape, jnp.float32) for key in keys)
    truth_out, truth_grads = attention_float64(q, k, v, ct)
    xla_out, xla_grads = value_and_grads(XLA, q, k, v, ct)
    with pltpu.force_tpu_interpret_mode():
        kernel_out, kernel_grads = value_and_grads(tpu_flash_attention, q, k, v, ct)
    names = ("output", "dq", "dk", "dv")
    for name, truth, xla, kernel in zip(
        names, (truth_out, *truth_grads), (xla_out, *xla_grads), (kernel_out, *kernel_grads)
    ):
        xla_error = np.max(np.abs(np.asarray(xla, np.float64) - truth))
        kernel_error = np.max(np.abs(np.asarray(kernel, np.float64) - truth))
        floor = 1e-6 * np.max(np.abs(truth))  # a few float32 ulps of the largest value
        assert kernel_error <= ERROR_FACTOR * max(xla_error, floor), (name, kernel_error, xla_error)


def test_padding_is_invisible():
    """A real query never attends to a padded key: the outputs for a length that needs padding
    equal those computed on its own rows of a longer, unpadded sequence whose extra keys are
    copies that would change the softmax if they were seen."""
    shape = (1, 100, 2, 16)
    q, k, v = (jax.random.normal(key, shape, jnp.float32) for key in jax.random.split(jax.random.key(1), 3))
    with pltpu.force_tpu_interpret_mode():
        got = jax.jit(tpu_flash_attention)(q, k, v)
    np.testing.assert_allclose(got, XLA(q, k, v), rtol=1e-4, atol=1e-5)


SCRIPT = Path(__file__).with_name("flash_attention_worker.py")


def test_train_step_with_the_kernel_sharded_and_not():
    """The whole train step of a tiny attention TRM with ``attention_impl="pallas"``: on one
    device and on a mesh of 8 CPU devices (the kernel inside shard_map), its loss, gradients
    and updated parameters are as close to the float64 model's as the XLA-attention float32
    step's are (subprocess: 64-bit JAX and 8 host devices are set before JAX is imported)."""
    env = dict(
        os.environ, JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8"
    )
    result = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "kernel within float32 rounding of float64" in result.stdout, result.stdout
