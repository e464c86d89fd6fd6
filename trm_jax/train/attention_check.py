"""``model.attention_impl`` resolved once at start-up.

``"auto"`` picks a fused (flash) attention kernel in 16-bit precision, where the fused kernel
of the platform compiles and agrees with XLA's attention on this machine: cuDNN's on a GPU,
the Pallas kernel on a TPU (:mod:`trm_jax.model.flash_attention`). Otherwise, and in 32- or
64-bit precision, it is XLA's, with a one-line warning when a kernel was tried and refused.
A kernel named explicitly is kept, on the platform it runs on.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from trm_jax.config import ConfigError, TRMConfig
from trm_jax.model.flash_attention import tpu_flash_attention
from trm_jax.model.network import compute_dtype

Attention = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
# bfloat16 keeps 8 bits of mantissa: two correct attention kernels differ by a few of its ulps.
_TOLERANCE = {jnp.dtype(jnp.bfloat16): 5e-2, jnp.dtype(jnp.float16): 1e-2}
# The fused kernel of each platform, and the one platform each kernel runs on.
FUSED_IMPL = {"gpu": "cudnn", "tpu": "pallas"}
_KERNEL_NAMES = {"cudnn": "cuDNN fused attention", "pallas": "the Pallas flash-attention kernel"}


def kernel(impl: str) -> Attention:
    """The attention function of a fused ``impl`` ("cudnn" or "pallas") on [B, L, H, hd]."""
    if impl == "pallas":
        return tpu_flash_attention
    return functools.partial(jax.nn.dot_product_attention, implementation=impl)


def auto_impl(config: TRMConfig, platform: str) -> str:
    """What ``"auto"`` tries on ``platform``: its fused kernel in 16-bit precision, else "xla"."""
    if jnp.dtype(compute_dtype(config)) not in _TOLERANCE:
        return "xla"
    return FUSED_IMPL.get(platform, "xla")


def check_platform(impl: str, platform: str) -> None:
    """Raises :class:`ConfigError` when a kernel named explicitly cannot run on ``platform``."""
    wanted = {kernel_impl: p for p, kernel_impl in FUSED_IMPL.items()}.get(impl)
    if wanted is not None and platform != wanted:
        raise ConfigError(
            f"config.model.attention_impl={impl!r}: {_KERNEL_NAMES[impl]} runs on "
            f"{wanted.upper()}s only, and this run's devices are {platform.upper()}s "
            f"(use 'auto' or 'xla')"
        )


def resolve_attention_impl(
    config: TRMConfig, *, backend: str | None = None, fused: Attention | None = None, reference: Attention | None = None
) -> tuple[str, str | None]:
    """``(impl, warning)``: the attention implementation a run should use.

    An explicit ``config.attention_impl`` is kept (a kernel of another platform is a
    :class:`ConfigError`). ``"auto"``: on a platform with a fused kernel and in 16-bit
    precision, the kernel (``fused``, default the platform's) is compiled and run on one row
    of the model's attention shape and compared with ``reference`` (default XLA's): kept when
    it compiles and agrees, else "xla" and a one-line ``warning``. ``backend`` defaults to
    ``jax.default_backend()``; the arguments let a CPU test inject a failing or disagreeing
    kernel.
    """
    backend = backend or jax.default_backend()
    if config.attention_impl != "auto":
        check_platform(config.attention_impl, backend)
        return config.attention_impl, None
    impl = auto_impl(config, backend)
    if impl == "xla":
        return "xla", None
    dtype = jnp.dtype(compute_dtype(config))
    fused = fused or kernel(impl)
    reference = reference or functools.partial(jax.nn.dot_product_attention, implementation="xla")
    shape = (1, config.total_len, config.num_heads, config.hidden_size // config.num_heads)
    q, k, v = (jax.random.normal(key, shape, dtype) for key in jax.random.split(jax.random.key(0), 3))
    name = _KERNEL_NAMES[impl]
    try:
        got = np.asarray(jax.jit(fused)(q, k, v), np.float32)
    except Exception as err:  # noqa: BLE001 - any compile/run failure means: use XLA
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
        return "xla", (f"warning: {name} does not compile here ({type(err).__name__}: {reason}); using XLA attention")
    want = np.asarray(jax.jit(reference)(q, k, v), np.float32)
    worst = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("inf")
    if not worst <= _TOLERANCE[dtype]:
        return "xla", (
            f"warning: {name} disagrees with XLA's attention on this machine "
            f"(max abs difference {worst:.3g}); using XLA attention"
        )
    return impl, None
