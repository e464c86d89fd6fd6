"""Optimisers and EMA: AdamATan2 vs a NumPy transcription of the adam-atan2 0.0.3 kernel, the
warm-up/cosine schedule vs hand-computed values, sparse sign-SGD vs the reference fixtures (and on
8 fake devices), EMA vs hand computation."""

from __future__ import annotations

import glob
import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from trm_jax.train.ema import ema_init, ema_update
from trm_jax.train.optim import (
    SparseSignSGD,
    adam_atan2,
    atan2_nonnegative_x,
    scale_by_adam_atan2,
    sparse_signsgd_update,
    warmup_cosine_schedule,
)

FIXTURES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "fixtures", "*.npz")))


# ------------------------------------------------------------------------------------ AdamATan2
def _kernel_step(p, g, m, v, t, lr, b1, b2, wd):
    """NumPy transcription of one adam-atan2 0.0.3 CUDA kernel step for float32 tensors.

    Scalars are formed in float64 and cast to float32 as the kernel does; lerp is the kernel's
    fma(w, b, fma(-w, a, a)), emulated by float64 arithmetic rounded to float32 once per fma.
    """
    f32 = np.float32
    step_size = f32(lr / (1 - b1**t))
    wd_alpha = f32(1 - lr * wd)
    bc2_sqrt = f32(math.sqrt(1 - b2**t))
    mb1, mb2 = f32(1 - b1), f32(1 - b2)

    def lerp(a, b, w):
        inner = (-np.float64(w) * a + a).astype(f32)
        return (np.float64(w) * b + inner).astype(f32)

    p = (p * wd_alpha).astype(f32)
    m = lerp(m, g, mb1)
    v = lerp(v, (g * g).astype(f32), mb2)
    denom = (np.sqrt(v) / bc2_sqrt).astype(f32)
    p = (p - step_size * np.arctan2(m, denom).astype(f32)).astype(f32)
    return p, m, v


@pytest.mark.parametrize("wd, use_schedule", [(0.1, False), (1.0, True)])
def test_adam_atan2_matches_kernel_formula(wd: float, use_schedule: bool) -> None:
    rng = np.random.default_rng(0)
    b1, b2, base_lr, steps = 0.9, 0.95, 1e-2, 6
    # Warm-up over 3 steps, then constant (min_ratio 1): the reference's lr at its steps t=1..6.
    lrs = [base_lr / 3, 2 * base_lr / 3, base_lr, base_lr, base_lr, base_lr] if use_schedule else [base_lr] * steps
    lr = warmup_cosine_schedule(base_lr, warmup_steps=3, total_steps=100) if use_schedule else base_lr

    params = {"w": rng.normal(size=(5, 7)).astype(np.float32), "b": rng.normal(size=(7,)).astype(np.float32)}
    opt = adam_atan2(lr, b1=b1, b2=b2, weight_decay=wd)
    state = opt.init(params)
    update = jax.jit(opt.update)

    ref = {k: (v.copy(), np.zeros_like(v), np.zeros_like(v)) for k, v in params.items()}
    jparams = jax.tree.map(jnp.asarray, params)
    for t in range(1, steps + 1):
        grads = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
        grads["b"][:2] = 0.0  # zero gradient: atan2(0, 0) must be 0 on the first step
        old = jax.tree.map(np.asarray, jparams)
        updates, state = update(jax.tree.map(jnp.asarray, grads), state, jparams)
        jparams = optax.apply_updates(jparams, updates)
        for k in params:
            ref[k] = _kernel_step(*ref[k][:1], grads[k], *ref[k][1:], t, lrs[t - 1], b1, b2, wd)
            got = np.asarray(jparams[k])
            np.testing.assert_allclose(got, ref[k][0], rtol=0, atol=2e-6, err_msg=f"{k} step {t}")
            # The change itself must match closely, not just the parameter.
            np.testing.assert_allclose(got - old[k], ref[k][0] - old[k], rtol=1e-4, atol=5e-7)  # a few ulp of p

    adam_state = state[0]
    assert int(adam_state.count) == steps
    for k in params:
        np.testing.assert_allclose(np.asarray(adam_state.mu[k]), ref[k][1], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(np.asarray(adam_state.nu[k]), ref[k][2], rtol=1e-6, atol=1e-7)


def test_atan2_nonnegative_x_within_2_5_ulp_of_float64() -> None:
    """The optimiser's vectorised atan2 against float64 ``np.arctan2``.

    Bound: 2.5 ulp where the result is a normal float32 (XLA's own float32 ``atan2`` reaches
    1.4 ulp on these inputs; 20M samples of the worst band, |y| / x in [0.40, 0.52], gave at
    most 2.38). Why that is enough: the direction d feeds ``p -= lr * d``, so its relative
    error of 2.5 * 2^-24 moves the update by less than half an ulp of ``p`` (the rounding of
    the subtraction itself) whenever |lr * d| < 0.2 |p|; training updates are orders of
    magnitude smaller than the parameters. Inputs: magnitudes over 40 decades, a dense band
    of |y| ~ x (results near pi/4, where the reduction switches), the switch points
    tan(pi/8) and 1 themselves, zeros, infinities and NaN."""
    rng = np.random.default_rng(0)
    n = 400_000
    y = rng.standard_normal(n) * 10.0 ** rng.uniform(-30, 10, n)
    x = np.abs(rng.standard_normal(n)) * 10.0 ** rng.uniform(-30, 10, n)
    band = slice(0, n // 4)
    y[band] = x[band] * rng.uniform(0.2, 5.0, n // 4) * np.sign(rng.standard_normal(n // 4))
    y, x = y.astype(np.float32), x.astype(np.float32)
    y[-4:] = np.float32(math.tan(math.pi / 8)) * x[-4:]
    y[-8:-4] = -x[-8:-4]
    got = np.asarray(jax.jit(atan2_nonnegative_x)(y, x), np.float64)
    truth = np.arctan2(y.astype(np.float64), x.astype(np.float64))
    normal = np.abs(truth) >= np.finfo(np.float32).tiny
    ulp = np.spacing(np.abs(truth).astype(np.float32)).astype(np.float64)
    assert (np.abs(got - truth) / ulp)[normal].max() <= 2.5
    assert np.all(np.sign(got[normal]) == np.sign(truth[normal]))
    special_y = np.array([0.0, -0.0, 1.0, -1.0, np.inf, 3.0, np.nan, 1.0], np.float32)
    special_x = np.array([0.0, 0.0, 0.0, 0.0, 1.0, np.inf, 1.0, np.nan], np.float32)
    got = np.asarray(atan2_nonnegative_x(special_y, special_x))
    np.testing.assert_array_equal(got[:6], np.arctan2(special_y[:6], special_x[:6]))
    assert np.signbit(got[1]) and np.isnan(got[6:]).all()


def test_adam_atan2_state_dtypes_with_bfloat16_params() -> None:
    params = {"w": jnp.ones((3, 2), jnp.bfloat16)}
    state = scale_by_adam_atan2().init(params)
    assert state.count.dtype == jnp.int32
    assert state.mu["w"].dtype == jnp.float32 and state.nu["w"].dtype == jnp.float32
    opt = adam_atan2(1e-3)
    updates, new_state = opt.update({"w": jnp.ones((3, 2), jnp.bfloat16)}, opt.init(params), params)
    assert updates["w"].dtype == jnp.bfloat16
    assert new_state[0].mu["w"].dtype == jnp.float32
    # First step with g = 1: atan2(0.1, sqrt(0.05)/sqrt(0.05)) / 0.1 = 10 * atan2(0.1, 1) per unit lr,
    # plus decay 0.1 * p.
    expected = -1e-3 * (10 * math.atan2(0.1, 1.0) + 0.1)
    np.testing.assert_allclose(np.asarray(updates["w"], np.float32), expected, rtol=1e-2)


# ------------------------------------------------------------------------------------- schedule
def test_warmup_cosine_schedule_values() -> None:
    base = 1e-2
    sched = warmup_cosine_schedule(base, warmup_steps=10, total_steps=30, min_ratio=0.1)
    # count c is evaluated at the reference's step c + 1.
    expected = {
        0: base * 1 / 10,
        4: base * 5 / 10,
        8: base * 9 / 10,
        9: base,  # step 10: end of warm-up, progress 0
        19: base * (0.1 + 0.9 * 0.5),  # step 20: progress 1/2, cos(pi/2) = 0
        29: base * 0.1,  # step 30: progress 1, the floor
        14: base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25))),  # step 15: progress 1/4
    }
    for count, value in expected.items():
        assert float(sched(count)) == pytest.approx(value, rel=1e-6), count
    assert float(jax.jit(sched)(jnp.int32(19))) == pytest.approx(expected[19], rel=1e-6)

    constant = warmup_cosine_schedule(base, warmup_steps=4, total_steps=100)  # min_ratio 1.0
    assert [float(constant(c)) for c in (0, 1, 2, 3, 50, 99)] == pytest.approx(
        [base / 4, base / 2, 3 * base / 4, base, base, base], rel=1e-6
    )
    no_warmup = warmup_cosine_schedule(base, warmup_steps=0, total_steps=10, min_ratio=0.0)
    # step 1 of 10: progress 0.1 -> 0.5 * (1 + cos(0.1 pi))
    assert float(no_warmup(0)) == pytest.approx(base * 0.5 * (1 + math.cos(0.1 * math.pi)), rel=1e-6)


# ------------------------------------------------------------------------------- sparse sign-SGD
@pytest.mark.parametrize("path", FIXTURES, ids=os.path.basename)
def test_sparse_signsgd_matches_reference_fixture(path: str) -> None:
    fx = np.load(path)
    # The fixtures' `signsgd/table_in` was recorded aliased to the table the reference updates in
    # place, so it equals `table_out`; the table before the step is the model's puzzle table.
    table_in = fx["param/inner.puzzle_emb.weights"]
    assert not np.array_equal(table_in, fx["signsgd/table_out"])
    got = sparse_signsgd_update(
        jnp.asarray(table_in),
        jnp.asarray(fx["signsgd/ids"]),
        jnp.asarray(fx["signsgd/grad"]),
        float(fx["signsgd/lr"]),
        float(fx["signsgd/weight_decay"]),
    )
    np.testing.assert_allclose(np.asarray(got), fx["signsgd/table_out"], rtol=0, atol=1e-6)


def test_sparse_signsgd_sums_repeated_ids_before_sign() -> None:
    table = np.array([[1.0, 2.0], [3.0, -4.0], [5.0, 6.0], [-7.0, 8.0]], np.float32)
    ids = np.array([1, 1, 3], np.int32)
    grads = np.array([[1.0, -2.0], [-3.0, 1.0], [0.5, 0.0]], np.float32)
    lr, wd = 0.1, 0.5
    got = np.asarray(jax.jit(sparse_signsgd_update)(table, ids, grads, lr, wd))
    # row 1: summed grad (-2, -1) -> sign (-1, -1) (a sum of signs would give 0 in column 0);
    # row 3: summed grad (0.5, 0) -> sign (1, 0), still decayed; rows 0 and 2 untouched, not decayed.
    expected = np.array(
        [[1.0, 2.0], [3.0 * 0.95 + 0.1, -4.0 * 0.95 + 0.1], [5.0, 6.0], [-7.0 * 0.95 - 0.1, 8.0 * 0.95]],
        np.float32,
    )
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_sparse_signsgd_wrapper_uses_its_schedule() -> None:
    opt = SparseSignSGD(warmup_cosine_schedule(1e-2, warmup_steps=4, total_steps=100), weight_decay=0.1)
    table = jnp.ones((3, 2))
    new = jax.jit(opt.update)(table, jnp.array([2], jnp.int32), jnp.array([[1.0, -1.0]]), jnp.int32(0))
    lr = 1e-2 / 4  # first update: the reference's step 1
    np.testing.assert_allclose(np.asarray(new), [[1, 1], [1, 1], [1 - lr * 0.1 - lr, 1 - lr * 0.1 + lr]], rtol=1e-6)
    assert float(SparseSignSGD(3e-3, 0.0).learning_rate(7)) == pytest.approx(3e-3)


def test_sparse_signsgd_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="row_grads"):
        sparse_signsgd_update(jnp.zeros((4, 2)), jnp.zeros((3,), jnp.int32), jnp.zeros((3, 5)), 0.1, 0.1)


_EIGHT_DEVICES = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from trm_jax.train.optim import sparse_signsgd_update
    assert jax.device_count() == 8, jax.devices()
    rng = np.random.default_rng(1)
    table = rng.normal(size=(10, 6)).astype(np.float32)
    ids = rng.integers(0, 7, size=(16,)).astype(np.int32)  # repeats spread over devices; rows 7..9 untouched
    grads = rng.normal(size=(16, 6)).astype(np.float32)
    one = np.asarray(jax.jit(sparse_signsgd_update)(jax.device_put(table, jax.devices()[0]),
                     jax.device_put(ids, jax.devices()[0]), jax.device_put(grads, jax.devices()[0]), 0.05, 0.3))
    mesh = Mesh(np.array(jax.devices()), ("data",))
    rep, shard = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    step = jax.jit(sparse_signsgd_update, out_shardings=rep)
    eight = step(jax.device_put(table, rep), jax.device_put(ids, shard), jax.device_put(grads, shard), 0.05, 0.3)
    assert len(eight.sharding.device_set) == 8
    np.testing.assert_array_equal(np.asarray(eight), one)
    np.testing.assert_array_equal(one[7:], table[7:])
    print("OK")
    """
)


def test_sparse_signsgd_same_on_one_and_eight_devices() -> None:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-c", _EIGHT_DEVICES], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


# ------------------------------------------------------------------------------------------ EMA
def test_ema_init_copies_and_update_matches_hand_computation() -> None:
    params = {"a": jnp.array([1.0, 2.0]), "b": {"c": jnp.array([[-4.0]])}}
    ema = ema_init(params)
    assert ema["a"] is not params["a"]
    np.testing.assert_array_equal(np.asarray(ema["a"]), [1.0, 2.0])

    new_params = {"a": jnp.array([3.0, 4.0]), "b": {"c": jnp.array([[6.0]])}}
    ema = jax.jit(ema_update, static_argnums=2)(ema, new_params, 0.9)
    np.testing.assert_allclose(np.asarray(ema["a"]), [0.9 * 1 + 0.1 * 3, 0.9 * 2 + 0.1 * 4], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ema["b"]["c"]), [[0.9 * -4 + 0.1 * 6]], rtol=1e-6)


def test_ema_default_rate_matches_reference_float32_arithmetic() -> None:
    rng = np.random.default_rng(2)
    shadow = rng.normal(size=(64,)).astype(np.float32)
    param = rng.normal(size=(64,)).astype(np.float32)
    got = np.asarray(ema_update({"p": jnp.asarray(shadow)}, {"p": jnp.asarray(param)})["p"])
    # The reference: (1. - mu) * param + mu * shadow with Python-float scalars on float32 tensors.
    expected = np.float32(1.0 - 0.999) * param + np.float32(0.999) * shadow
    np.testing.assert_array_equal(got, expected)


def test_adam_atan2_on_tuple_and_namedtuple_trees() -> None:
    params = (jnp.ones((2,)), {"x": (jnp.zeros((3,)), jnp.full((1,), 2.0))})
    opt = adam_atan2(0.1, weight_decay=0.0)
    grads = (jnp.array([1.0, -1.0]), {"x": (jnp.array([0.0, 2.0, -3.0]), jnp.array([0.5]))})
    updates, _ = jax.jit(opt.update)(grads, opt.init(params), params)
    # First step: m = 0.1 g, sqrt(v / 0.05) = |g|, so the direction is atan2(0.1 g, |g|) / 0.1; 0 for g = 0.
    step = 0.1 * 10 * math.atan2(0.1, 1.0)
    np.testing.assert_allclose(np.asarray(updates[0]), [-step, step], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(updates[1]["x"][0]), [0.0, -step, step], rtol=1e-5)
