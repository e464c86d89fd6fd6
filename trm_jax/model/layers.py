"""Building blocks of the TRM network: init, RMSNorm, RoPE, attention, SwiGLU.

Parameters are float32 (float64 in a float64 model, see :mod:`trm_jax.precision`); each layer
casts them to the compute dtype at use, as the official ``CastedLinear`` / ``CastedEmbedding`` do.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from trm_jax.model.flash_attention import tpu_flash_attention
from trm_jax.precision import at_least_float32

Array = jax.Array
Initializer = Callable[..., Array]

# Standard deviation of a unit normal truncated to [-2, 2]; dividing by it makes the
# truncated distribution have exactly the requested standard deviation.
_TRUNC_NORMAL_2SIGMA_STD = 0.87962566103423978


def truncated_normal_init(std: float) -> Initializer:
    """Truncated normal (+-2 sigma) whose *actual* standard deviation is ``std``.

    Matches the reference's ``trunc_normal_init_`` (itself a port of JAX's truncated
    normal with the variance correction); ``std == 0`` gives zeros.
    """

    def init(key: Array, shape: tuple[int, ...], dtype=jnp.float32) -> Array:
        if std == 0:
            return jnp.zeros(shape, dtype)
        unit = jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32)
        # Drawn and scaled in float32 whatever ``dtype`` (and whether 64-bit JAX is on), so a
        # float64 model starts from exactly the float32 model's weights.
        return (unit * jnp.float32(std / _TRUNC_NORMAL_2SIGMA_STD)).astype(dtype)

    return init


def lecun_init(fan_in: int) -> Initializer:
    """LeCun truncated normal, std ``1/sqrt(fan_in)``, with the scale formed as the reference forms it.

    Not ``flax.linen.initializers.lecun_normal``: that takes the square root of a float32
    variance, which moves some weights by one float32 ulp (measured: 15 of 27 draws over 9
    weight shapes differ), so initial weights would no longer equal ours bit for bit.
    """
    return truncated_normal_init(1.0 / np.sqrt(fan_in))


def swiglu_inner_size(dim: int, expansion: float) -> int:
    """Inner width of the reference SwiGLU: round(expansion*dim*2/3) up to a multiple of 256."""
    inner = round(expansion * dim * 2 / 3)
    return -(-inner // 256) * 256


def rms_norm(x: Array, eps: float, axis: int = -1) -> Array:
    """RMSNorm over ``axis`` without a learned scale, in (at least) float32 and cast back."""
    x32 = x.astype(at_least_float32(x.dtype))
    x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=axis, keepdims=True) + eps)
    return x32.astype(x.dtype)


def rope_cos_sin(head_dim: int, length: int, theta: float, dtype: jnp.dtype = jnp.float32) -> tuple[Array, Array]:
    """RoPE tables [length, head_dim] in ``dtype``, 'rotate half' layout (freqs repeated)."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=dtype) / head_dim))
    freqs = jnp.outer(jnp.arange(length, dtype=dtype), inv_freq)
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def _rotate_half(x: Array) -> Array:
    half = x.shape[-1] // 2
    return jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
    """Rotates x [B, S, H, hd] by position; the arithmetic runs in (at least) float32."""
    x32 = x.astype(at_least_float32(x.dtype))
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    return (x32 * cos + _rotate_half(x32) * sin).astype(x.dtype)


class CastedDense(nn.Module):
    """Linear layer with (at least) float32 parameters cast to ``dtype``; LeCun truncated-normal init."""

    features: int
    use_bias: bool = False
    dtype: jnp.dtype = jnp.float32
    kernel_init: Initializer | None = None
    bias_init: Initializer = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel_init = self.kernel_init or lecun_init(x.shape[-1])
        param_dtype = at_least_float32(self.dtype)
        kernel = self.param("kernel", kernel_init, (x.shape[-1], self.features), param_dtype)
        y = jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), param_dtype)
            y = y + bias.astype(self.dtype)
        return y


class SwiGLU(nn.Module):
    """``down(silu(gate) * up)`` with one fused input projection; no biases."""

    expansion: float
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        dim = x.shape[-1]
        inner = swiglu_inner_size(dim, self.expansion)
        gate, up = jnp.split(CastedDense(2 * inner, dtype=self.dtype, name="gate_up_proj")(x), 2, axis=-1)
        return CastedDense(dim, dtype=self.dtype, name="down_proj")(nn.silu(gate) * up)


class _Kernel(nn.Module):
    """A ``[fan_in, features]`` weight stored as ``CastedDense`` stores it (``{"kernel": ...}``)."""

    fan_in: int
    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self) -> Array:
        kernel = self.param(
            "kernel", lecun_init(self.fan_in), (self.fan_in, self.features), at_least_float32(self.dtype)
        )
        return kernel.astype(self.dtype)


class SequenceSwiGLU(nn.Module):
    """The SwiGLU of :class:`SwiGLU` applied along the *leading* axis of ``x`` [L, ...].

    The same parameters (``gate_up_proj`` [L, 2*inner], ``down_proj`` [inner, L]) and the same
    function as ``SwiGLU`` on ``x`` moved to the last axis, computed as two 2-D matrix
    products with the weights on the left: ``W^T @ x.reshape(L, -1)``. Mixing the tokens
    of a sequence-major [L, B, D] tensor this way needs no transpose of the activations,
    and each product is one large GEMM (``N = B*D``) instead of one per row.
    """

    expansion: float
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        length, rest = x.shape[0], x.shape[1:]
        inner = swiglu_inner_size(length, self.expansion)
        gate_up = _Kernel(length, 2 * inner, self.dtype, name="gate_up_proj")()
        down = _Kernel(inner, length, self.dtype, name="down_proj")()
        hidden = jnp.dot(gate_up.T, x.astype(self.dtype).reshape(length, -1))
        gate, up = jnp.split(hidden, 2, axis=0)
        return jnp.dot(down.T, nn.silu(gate) * up).reshape((length,) + rest)


def attention(q: Array, k: Array, v: Array, impl: str) -> Array:
    """Non-causal scaled dot-product attention of [B, L, H, hd] tensors.

    ``impl``: ``"xla"`` (XLA's, which materialises the [L, L] scores), ``"cudnn"`` (cuDNN's
    fused flash attention, GPU), ``"pallas"`` (the Pallas flash-attention kernel, TPU: see
    :mod:`trm_jax.model.flash_attention`) or ``"auto"``: cuDNN's on a GPU for 16-bit inputs,
    XLA's otherwise (runs resolve "auto" once at start-up, :mod:`trm_jax.train.attention_check`,
    which also picks the TPU kernel). float64 inputs take a plain einsum/softmax path in
    float64 whatever ``impl``: ``jax.nn.dot_product_attention`` always runs its softmax in
    float32.
    """
    if q.dtype == jnp.float64:
        return _attention_float64(q, k, v)
    if impl == "pallas":
        return tpu_flash_attention(q, k, v)
    if impl == "auto":
        use_cudnn = jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16)
        if use_cudnn:
            try:
                return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
            except Exception:  # noqa: BLE001 - unsupported shape/version: XLA is always valid
                pass
        return jax.nn.dot_product_attention(q, k, v, implementation="xla")
    return jax.nn.dot_product_attention(q, k, v, implementation=impl)


def _attention_float64(q: Array, k: Array, v: Array) -> Array:
    """Scaled dot-product attention with every operation in the inputs' dtype."""
    logits = jnp.einsum("btnh,bsnh->bnts", q, k) * (1.0 / np.sqrt(q.shape[-1]))
    return jnp.einsum("bnts,bsnh->btnh", jax.nn.softmax(logits, axis=-1), v)


class Attention(nn.Module):
    """Non-causal multi-head self-attention with a fused qkv projection and optional RoPE."""

    num_heads: int
    dtype: jnp.dtype = jnp.float32
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: Array, cos_sin: tuple[Array, Array] | None) -> Array:
        batch, length, dim = x.shape
        head_dim = dim // self.num_heads
        qkv = CastedDense(3 * dim, dtype=self.dtype, name="qkv_proj")(x)
        qkv = qkv.reshape(batch, length, 3 * self.num_heads, head_dim)
        q, k, v = jnp.split(qkv, 3, axis=2)
        if cos_sin is not None:
            q, k = apply_rope(q, *cos_sin), apply_rope(k, *cos_sin)
        out = attention(q, k, v, self.impl)
        return CastedDense(dim, dtype=self.dtype, name="o_proj")(out.reshape(batch, length, dim))
