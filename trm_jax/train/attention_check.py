"""``model.attention_impl="auto"`` resolved once at start-up: cuDNN fused attention when it
compiles and agrees with XLA's on this machine, else XLA's, with a one-line warning."""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from trm_jax.config import TRMConfig
from trm_jax.model.network import compute_dtype

Attention = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
# bfloat16 keeps 8 bits of mantissa: two correct attention kernels differ by a few of its ulps.
_TOLERANCE = {jnp.dtype(jnp.bfloat16): 5e-2, jnp.dtype(jnp.float16): 1e-2}


def resolve_attention_impl(config: TRMConfig, *, backend: str | None = None,
                           fused: Attention | None = None,
                           reference: Attention | None = None) -> tuple[str, str | None]:
    """``(impl, warning)``: the attention implementation a run should use.

    An explicit ``config.attention_impl`` ("xla", "cudnn") is kept. ``"auto"`` is "xla" except
    on a GPU in 16-bit precision, where the fused kernel (``fused``, default cuDNN's) is compiled
    and run on one row of the model's attention shape and compared with ``reference`` (default
    XLA's): "cudnn" when it compiles and agrees, else "xla" and a one-line ``warning``.
    ``backend`` defaults to ``jax.default_backend()``; the arguments let a CPU test inject a
    failing or disagreeing kernel.
    """
    if config.attention_impl != "auto":
        return config.attention_impl, None
    dtype = jnp.dtype(compute_dtype(config))
    if (backend or jax.default_backend()) != "gpu" or dtype not in _TOLERANCE:
        return "xla", None
    fused = fused or functools.partial(jax.nn.dot_product_attention, implementation="cudnn")
    reference = reference or functools.partial(jax.nn.dot_product_attention, implementation="xla")
    shape = (1, config.total_len, config.num_heads, config.hidden_size // config.num_heads)
    q, k, v = (jax.random.normal(key, shape, dtype) for key in jax.random.split(jax.random.key(0), 3))
    try:
        got = np.asarray(jax.jit(fused)(q, k, v), np.float32)
    except Exception as err:  # noqa: BLE001 - any compile/run failure means: use XLA
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
        return "xla", (f"warning: cuDNN fused attention does not compile here "
                       f"({type(err).__name__}: {reason}); using XLA attention")
    want = np.asarray(jax.jit(reference)(q, k, v), np.float32)
    worst = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("inf")
    if not worst <= _TOLERANCE[dtype]:
        return "xla", (f"warning: cuDNN fused attention disagrees with XLA's on this machine "
                       f"(max abs difference {worst:.3g}); using XLA attention")
    return "cudnn", None
