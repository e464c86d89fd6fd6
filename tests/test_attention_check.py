"""model.attention_impl="auto": the start-up check of the fused attention kernels (cuDNN's on a
GPU, the Pallas kernel on a TPU), on CPU with injected kernels (on the hardware the defaults
compile the real ones)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from trm_jax.config import ConfigError
from trm_jax.train.attention_check import resolve_attention_impl
from trm_test_utils import tiny_model_config

XLA = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="xla")  # noqa: E731
BF16 = tiny_model_config(forward_dtype="bfloat16", attention_impl="auto")


def test_auto_is_xla_on_cpu_and_in_float32():
    assert resolve_attention_impl(BF16) == ("xla", None)
    f32 = tiny_model_config(attention_impl="auto")
    assert resolve_attention_impl(f32, backend="gpu", fused=XLA) == ("xla", None)


def test_explicit_impl_is_kept_on_its_platform():
    assert resolve_attention_impl(tiny_model_config(attention_impl="cudnn"), backend="gpu") == ("cudnn", None)
    assert resolve_attention_impl(tiny_model_config(attention_impl="pallas"), backend="tpu") == ("pallas", None)
    assert resolve_attention_impl(tiny_model_config(attention_impl="xla"), backend="gpu") == ("xla", None)


@pytest.mark.parametrize("impl, platform", [("cudnn", "GPU"), ("pallas", "TPU")])
def test_explicit_kernel_of_another_platform_is_a_config_error(impl, platform):
    with pytest.raises(
        ConfigError,
        match=rf"config.model.attention_impl='{impl}': .* runs on {platform}s only, "
        r"and this run's devices are CPUs",
    ):
        resolve_attention_impl(tiny_model_config(attention_impl=impl))


def test_auto_tries_the_pallas_kernel_on_tpu():
    assert resolve_attention_impl(BF16, backend="tpu", fused=XLA, reference=XLA) == ("pallas", None)
    wrong = lambda q, k, v: XLA(q, k, v) + jnp.asarray(0.5, q.dtype)  # noqa: E731
    impl, warning = resolve_attention_impl(BF16, backend="tpu", fused=wrong, reference=XLA)
    assert impl == "xla" and "the Pallas flash-attention kernel disagrees" in warning


def test_fused_kernel_that_agrees_is_used():
    assert resolve_attention_impl(BF16, backend="gpu", fused=XLA, reference=XLA) == ("cudnn", None)


def test_fused_kernel_that_fails_to_compile_falls_back_with_one_line():
    def broken(q, k, v):
        raise NotImplementedError("cuDNN 9.1 needed\nsecond line")

    impl, warning = resolve_attention_impl(BF16, backend="gpu", fused=broken, reference=XLA)
    assert impl == "xla" and "\n" not in warning
    assert "does not compile" in warning and "NotImplementedError: cuDNN 9.1 needed" in warning


def test_fused_kernel_that_disagrees_falls_back():
    wrong = lambda q, k, v: XLA(q, k, v) + jnp.asarray(0.5, q.dtype)  # noqa: E731
    impl, warning = resolve_attention_impl(BF16, backend="gpu", fused=wrong, reference=XLA)
    assert impl == "xla" and "disagrees" in warning and "\n" not in warning
