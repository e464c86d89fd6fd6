"""The TRM network as a Flax module, and the creation of its variables.

The module owns the trainable parameters only. Its methods are the pieces the recursion
calls (:mod:`trm_jax.model.recursion`): ``embed`` (token + puzzle + position embedding),
``reason`` (the shared ``L_level`` stack: ``net(h, injection) = blocks(h + injection)``) and
``heads`` (lm head and Q head). The non-trained state lives beside the parameters in a
``buffers`` dict: ``H_init`` and ``L_init`` (the reset values of z_H / z_L) and
``puzzle_emb``, the puzzle-embedding table trained by sparse sign-SGD, not by the optimiser.

Variables layout (a plain pytree)::

    {"params": {...flax params...},
     "buffers": {"H_init": [D], "L_init": [D], "puzzle_emb": [num_puzzle_identifiers, ndim]}}
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from trm_jax.config import TRMConfig
from trm_jax.model.layers import (
    Attention,
    CastedDense,
    SequenceSwiGLU,
    SwiGLU,
    rms_norm,
    rope_cos_sin,
    truncated_normal_init,
)
from trm_jax.precision import at_least_float32

Array = jax.Array
Variables = dict[str, Any]


def compute_dtype(config: TRMConfig) -> jnp.dtype:
    """The dtype of activations and matrix products (``config.forward_dtype``)."""
    return jnp.dtype(config.forward_dtype)


def param_dtype(config: TRMConfig) -> jnp.dtype:
    """The dtype of parameters and buffers: float32, or float64 in a float64 model."""
    return at_least_float32(compute_dtype(config))


def to_recursion_layout(config: TRMConfig, a: Array) -> Array:
    """A [B, L, D] tensor in the layout the recursion runs in: [L, B, D] for ``mlp_t`` models.

    The ``mlp_t`` token mixing is a SwiGLU along the sequence axis. On sequence-major
    activations it is two 2-D matrix products with the weights on the left
    (:class:`SequenceSwiGLU`), where on [B, L, D] it needs a transpose of the activations
    before and after and its products have the narrow sequence length as their inner or
    outer size; the channel SwiGLU and the norms work on either layout. Attention models
    keep [B, L, D]. Only the layout changes, not the function (the parity fixtures hold).
    """
    return jnp.swapaxes(a, 0, 1) if config.mlp_t else a


def from_recursion_layout(config: TRMConfig, a: Array) -> Array:
    """The inverse of :func:`to_recursion_layout`: back to [B, L, D]."""
    return jnp.swapaxes(a, 0, 1) if config.mlp_t else a


class TRMBlock(nn.Module):
    """One post-norm block: token mixing (attention or ``mlp_t``) then a channel SwiGLU.

    ``h`` is in the recursion layout (:func:`to_recursion_layout`).
    """

    config: TRMConfig

    @nn.compact
    def __call__(self, h: Array, cos_sin: tuple[Array, Array] | None) -> Array:
        c = self.config
        dtype = compute_dtype(c)
        if c.mlp_t:
            # h is [L, B, D]: a SwiGLU across the sequence axis, normalised over it.
            h = rms_norm(h + SequenceSwiGLU(c.expansion, dtype, name="mlp_t")(h), c.rms_norm_eps, axis=0)
        else:
            attn = Attention(c.num_heads, dtype, c.attention_impl, name="self_attn")
            h = rms_norm(h + attn(h, cos_sin), c.rms_norm_eps)
        return rms_norm(h + SwiGLU(c.expansion, dtype, name="mlp")(h), c.rms_norm_eps)


class ReasoningModule(nn.Module):
    """The shared network ``net(h, injection) = blocks(h + injection)`` (``L_level``)."""

    config: TRMConfig

    @nn.compact
    def __call__(self, h: Array, injection: Array, cos_sin: tuple[Array, Array] | None) -> Array:
        h = h + injection
        for i in range(self.config.L_layers):
            h = TRMBlock(self.config, name=f"layers_{i}")(h, cos_sin)
        return h


class TRMNet(nn.Module):
    """Embeddings, the shared reasoning stack and the two heads of TRM."""

    config: TRMConfig

    def setup(self) -> None:
        c = self.config
        std = 1.0 / math.sqrt(c.hidden_size)
        self.embed_tokens = self.param(
            "embed_tokens", truncated_normal_init(std), (c.vocab_size, c.hidden_size), param_dtype(c)
        )
        if c.pos_encodings == "learned":
            self.embed_pos = self.param(
                "embed_pos", truncated_normal_init(std), (c.total_len, c.hidden_size), param_dtype(c)
            )
        self.L_level = ReasoningModule(c)
        dtype = compute_dtype(c)
        self.lm_head = CastedDense(c.vocab_size, dtype=dtype)
        self.q_head = CastedDense(
            2, use_bias=True, dtype=dtype, kernel_init=nn.initializers.zeros, bias_init=nn.initializers.constant(-5.0)
        )

    def cos_sin(self) -> tuple[Array, Array] | None:
        c = self.config
        if c.pos_encodings != "rope":
            return None
        return rope_cos_sin(c.head_dim, c.total_len, c.rope_theta, param_dtype(c))

    def embed(self, inputs: Array, puzzle_rows: Array | None) -> Array:
        """Input embedding [B, total_len, D] in the compute dtype.

        ``puzzle_rows`` [B, puzzle_emb_ndim] are the gathered puzzle-embedding rows (None
        when the model has none); they fill the prefix positions, zero-padded.
        """
        c = self.config
        dtype = compute_dtype(c)
        emb = jnp.take(self.embed_tokens.astype(dtype), inputs.astype(jnp.int32), axis=0)
        if c.prefix_len > 0:
            batch = inputs.shape[0]
            width = c.prefix_len * c.hidden_size
            if puzzle_rows is None or c.puzzle_emb_ndim == 0:
                prefix = jnp.zeros((batch, width), dtype)
            else:
                prefix = jnp.pad(puzzle_rows.astype(dtype), ((0, 0), (0, width - puzzle_rows.shape[-1])))
            emb = jnp.concatenate([prefix.reshape(batch, c.prefix_len, c.hidden_size), emb], axis=1)
        if c.pos_encodings == "learned":
            emb = 0.707106781 * (emb + self.embed_pos.astype(dtype))
        return (math.sqrt(c.hidden_size) * emb).astype(dtype)

    def reason(self, h: Array, injection: Array) -> Array:
        """One application of the shared network: ``blocks(h + injection)``, on tensors in the
        recursion layout (:func:`to_recursion_layout`)."""
        return self.L_level(h, injection, self.cos_sin())

    def heads(self, z_H: Array) -> tuple[Array, Array, Array]:
        """(logits [B, seq_len, V], q_halt [B], q_continue [B]); Q logits in (at least) float32."""
        logits = self.lm_head(z_H)[:, self.config.prefix_len :]
        q = self.q_head(z_H[:, 0]).astype(param_dtype(self.config))
        return logits, q[..., 0], q[..., 1]

    def __call__(self, inputs: Array, puzzle_rows: Array | None, z: Array):
        """A single pass through every sub-module; used to create the parameters."""
        x = self.embed(inputs, puzzle_rows)
        c = self.config
        h = self.reason(to_recursion_layout(c, z), to_recursion_layout(c, x))
        return self.heads(from_recursion_layout(c, h))


def init_variables(config: TRMConfig, rng: Array) -> Variables:
    """Fresh variables with the reference's initialisation scheme.

    Linear weights: truncated normal, std 1/sqrt(fan_in); embeddings std 1/sqrt(D); Q head
    weight 0 and bias -5; puzzle embeddings 0; H_init / L_init truncated normal std 1.
    """
    k_params, k_h, k_l = jax.random.split(rng, 3)
    # The parameters do not depend on the attention kernel: XLA's traces on every backend
    # and needs no mesh (a Pallas kernel must run inside shard_map on a sharded batch).
    model = TRMNet(config.replace(attention_impl="xla"))
    inputs = jnp.zeros((1, config.seq_len), jnp.int32)
    dtype = param_dtype(config)
    rows = jnp.zeros((1, config.puzzle_emb_ndim), dtype) if config.puzzle_emb_ndim else None
    z = jnp.zeros((1, config.total_len, config.hidden_size), compute_dtype(config))
    params = model.init(k_params, inputs, rows, z)["params"]
    init_std1 = truncated_normal_init(1.0)
    buffers = {
        "H_init": init_std1(k_h, (config.hidden_size,), dtype),
        "L_init": init_std1(k_l, (config.hidden_size,), dtype),
        "puzzle_emb": jnp.zeros((config.num_puzzle_identifiers, config.puzzle_emb_ndim), dtype),
    }
    return {"params": params, "buffers": buffers}


def count_params(variables: Variables) -> int:
    """Number of trainable parameters (the puzzle table and reset vectors excluded)."""
    return sum(x.size for x in jax.tree_util.tree_leaves(variables["params"]))
