"""Inference with a halting policy and continuous batching (trm_jax.inference)."""

from __future__ import annotations

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from test_train_step import TESTS_DIR, run_with_devices
from trm_jax import inference as inf
from trm_jax.model.act import evaluate_to_halt
from trm_jax.model.network import init_variables
from trm_test_utils import random_batch, tiny_model_config

CAP = 4


def with_halting_head(variables, seed: int, shift: float):
    """The variables with a random halting head (the initial one never halts: bias -5, weights 0),
    its halt logit shifted by ``shift`` so that puzzles halt at different steps."""
    q = variables["params"]["q_head"]
    key = jax.random.key(seed)
    kernel = jax.random.normal(key, q["kernel"].shape, q["kernel"].dtype) * 0.5
    bias = q["bias"].at[0].set(shift)
    return {**variables, "params": {**variables["params"], "q_head": {"kernel": kernel, "bias": bias}}}


def setup(n: int = 10, seed: int = 0):
    config = tiny_model_config(halt_max_steps=CAP)
    variables = with_halting_head(init_variables(config, jax.random.key(seed)), seed + 1, shift=-2.0)
    puzzles = {k: jnp.asarray(v) for k, v in random_batch(config, n, seed=seed + 2).items()}
    return config, variables, puzzles


def test_policy_checks():
    with pytest.raises(ValueError, match="halting mode 'sometimes'"):
        inf.HaltingPolicy("sometimes")
    with pytest.raises(ValueError, match="threshold=0"):
        inf.HaltingPolicy("adaptive", threshold=0.0)
    with pytest.raises(ValueError, match="max_steps=-1"):
        inf.HaltingPolicy(max_steps=-1)
    assert inf.HaltingPolicy("adaptive").logit_threshold() == 0.0
    assert inf.HaltingPolicy("adaptive", threshold=1.0).logit_threshold() == np.inf
    assert inf.HaltingPolicy("fixed", threshold=0.5).logit_threshold() == np.inf
    assert inf.HaltingPolicy(max_steps=7).cap(tiny_model_config()) == 7


FIXED_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import jax, jax.numpy as jnp, numpy as np
    from test_inference import setup, CAP
    from trm_jax import inference as inf
    from trm_jax.model.act import evaluate_to_halt

    assert jax.config.jax_enable_x64
    config, variables, puzzles = setup()
    config = config.replace(forward_dtype="float64")
    variables = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x, variables)
    _, want = evaluate_to_halt(config, variables, puzzles)
    for num_slots in (10, 3):
        got = jax.device_get(inf.make_solver(config, num_slots=num_slots)(variables, puzzles))
        np.testing.assert_array_equal(got["steps"], CAP)
        np.testing.assert_array_equal(got["preds"], np.asarray(jnp.argmax(want["logits"], -1)))
        np.testing.assert_allclose(got["q_halt_logits"], np.asarray(want["q_halt_logits"]),
                                   rtol=1e-9, atol=1e-12)
        print("FIXED_OK", num_slots)
""")


def test_fixed_equals_evaluate_to_halt():
    """``fixed`` gives every puzzle what the batch evaluation (the official loop) gives it, whether
    the slots hold the whole batch (10) or puzzles stream through 3 slots.

    float64 model: 3 slots change the matmul shapes, so the sums are rounded in another order.
    In float32 that moved a halt logit by 5.6e-5 relative after 4 ACT steps on one CPU (Intel,
    AVX-512) and by less than 1e-5 on another (AMD): a float32 bound would be a claim about one
    machine. In float64 the rounding is ~1e-16 relative; 1e-9 leaves room for a 1e7 amplification
    through the recursion while a wrong step or carry still moves the logits by O(1)."""
    out = run_with_devices(FIXED_SCRIPT.format(tests=str(TESTS_DIR)), devices=1, x64=True)
    assert "FIXED_OK 10" in out and "FIXED_OK 3" in out


def test_adaptive_that_never_fires_equals_fixed():
    config, variables, puzzles = setup()
    fixed = inf.make_solver(config, num_slots=4)(variables, puzzles)
    never = inf.make_solver(config, num_slots=4, policy=inf.HaltingPolicy("adaptive", threshold=1.0))(
        variables, puzzles
    )
    for key in fixed:
        np.testing.assert_array_equal(np.asarray(never[key]), np.asarray(fixed[key]), err_msg=key)


def test_adaptive_halts_rows_at_different_steps_and_summarizes():
    config, variables, puzzles = setup()
    got = jax.device_get(inf.make_solver(config, num_slots=4, policy=inf.HaltingPolicy("adaptive"))(variables, puzzles))
    assert len(set(got["steps"].tolist())) >= 3, got["steps"]  # else the test below means little
    halted_early = got["steps"] < CAP
    assert np.all(got["q_halt_logits"][halted_early] > 0)
    summary = inf.summarize(got, CAP)
    assert summary["count"] == 10 and summary["steps"] == pytest.approx(got["steps"].mean())
    assert summary["halted_early"] == pytest.approx(halted_early.mean())


def test_results_without_labels():
    config, variables, puzzles = setup()
    puzzles = {k: v for k, v in puzzles.items() if k != "labels"}
    got = inf.make_solver(config, num_slots=4)(variables, puzzles)
    assert set(got) == {"preds", "q_halt_logits", "steps"}


ALONE_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import jax, jax.numpy as jnp, numpy as np
    from test_inference import setup, alone, CAP
    from trm_jax import inference as inf
    from trm_jax.train import parallel

    assert jax.device_count() == 8 and jax.config.jax_enable_x64
    config, variables, puzzles = setup(n=13)
    config = config.replace(forward_dtype="float64")
    variables = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x, variables)
    policy = inf.HaltingPolicy("adaptive")
    want = alone(config, variables, puzzles, policy)
    assert len(set(want["steps"].tolist())) >= 3, want["steps"]
    for name, solver in [("1 device", inf.make_solver(config, num_slots=3, policy=policy)),
                         ("8 devices", inf.make_solver(config, num_slots=8, policy=policy,
                                                       mesh=parallel.make_mesh()))]:
        got = jax.device_get(solver(variables, puzzles))
        np.testing.assert_array_equal(got["steps"], want["steps"], err_msg=name)
        np.testing.assert_array_equal(got["preds"], want["preds"], err_msg=name)
        np.testing.assert_allclose(got["q_halt_logits"], want["q_halt_logits"], rtol=1e-9, atol=1e-12, err_msg=name)
        print("ALONE_OK", name)
""")


def alone(config, variables, puzzles, policy):
    """Each puzzle run by itself, one evaluation step more at a time, until the policy stops it."""
    run_config = config.replace(halt_max_steps=policy.cap(config))
    run = jax.jit(evaluate_to_halt, static_argnums=(0, 3))
    out = {"steps": [], "preds": [], "q_halt_logits": []}
    for i in range(puzzles["inputs"].shape[0]):
        row = {k: v[i : i + 1] for k, v in puzzles.items()}
        for k in range(1, run_config.halt_max_steps + 1):
            _, outputs = run(run_config, variables, row, k)
            q = float(outputs["q_halt_logits"][0])
            if q > policy.logit_threshold() or k == run_config.halt_max_steps:
                break
        out["steps"].append(k)
        out["preds"].append(np.asarray(jnp.argmax(outputs["logits"][0], -1)))
        out["q_halt_logits"].append(q)
    return {k: np.asarray(v) for k, v in out.items()}


def test_adaptive_gives_each_puzzle_what_it_gets_alone_on_1_and_8_devices():
    """Continuous batching changes nothing for a puzzle: 13 puzzles through 3 slots (1 device)
    and through 8 slots sharded over 8 devices give each the steps, answer and halt logit it
    gets run alone. float64 model: the rows' matmuls differ in shape, and float64 keeps their
    rounding (~1e-16 relative) far from moving a halt decision or an argmax."""
    out = run_with_devices(ALONE_SCRIPT.format(tests=str(TESTS_DIR)), x64=True)
    assert "ALONE_OK 1 device" in out and "ALONE_OK 8 devices" in out


def test_memory_does_not_grow_with_the_step_cap():
    config, variables, puzzles = setup()

    def temp_bytes(cap):
        policy = inf.HaltingPolicy("adaptive", max_steps=cap)
        compiled = inf.make_solver(config, num_slots=4, policy=policy).lower(variables, puzzles).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    assert temp_bytes(32) == temp_bytes(2)
