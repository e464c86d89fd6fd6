"""Stochastic test-time scaling (trm_jax.trajectories and the solver's trajectories)."""

from __future__ import annotations

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from test_inference import CAP, setup
from test_train_step import TESTS_DIR, run_with_devices
from trm_jax import inference as inf
from trm_jax.model.act import advance, gather_puzzle_rows, initial_carry, reset_halted
from trm_jax.trajectories import NOISE_SALT, TrajectorySampling, select_trajectories, trajectory_noise


def test_sampling_checks():
    for kwargs, message in [
        ({"trajectories": 0}, "trajectories=0"),
        ({"noise": -0.1}, "noise=-0.1"),
        ({"noise": float("nan")}, "noise=nan"),
        ({"select": "best"}, "select='best'"),
        ({"noise_on": "x"}, "noise_on='x'"),
    ]:
        with pytest.raises(ValueError, match=message):
            TrajectorySampling(**kwargs)
    assert TrajectorySampling().is_plain and not TrajectorySampling(2).is_plain
    assert not TrajectorySampling(1, 0.1).is_plain


def test_noise_needs_a_key():
    config, variables, puzzles = setup()
    with pytest.raises(ValueError, match="needs a PRNG key"):
        inf.solve(config, variables, puzzles, num_slots=2, sampling=TrajectorySampling(2, 0.1))


def per_trajectory(preds, q_halt, exact):
    """Constructed per-trajectory results: preds [N, K] (one token per answer), q_halt, exact [N, K]."""
    preds = np.asarray(preds, np.int32)[..., None]
    n, k = preds.shape[:2]
    return {
        "preds": jnp.asarray(preds),
        "q_halt_logits": jnp.asarray(q_halt, jnp.float32),
        "steps": jnp.full((n, k), 3, jnp.int32),
        "exact": jnp.asarray(exact, bool),
    }


def test_selection_rules_on_constructed_cases():
    results = per_trajectory(
        preds=[
            [5, 5, 5, 5],  # all agree, all wrong
            [1, 2, 2, 3],  # one right (1), with the highest q_halt; the majority (2) wrong
            [7, 7, 8, 8],  # a two-two tie of answers: the answer with the highest q_halt wins it
            [4, 6, 6, 9],
        ],  # q_halt ties (1.0 twice): the lower trajectory index wins
        q_halt=[[0.1, 0.3, 0.2, 0.0], [2.0, 1.0, 0.5, -1.0], [0.0, -3.0, 0.5, -1.0], [1.0, 1.0, -2.0, 0.0]],
        exact=[[False] * 4, [True, False, False, False], [False, False, True, True], [False, True, True, False]],
    )
    by_qhalt = jax.device_get(select_trajectories(results, "qhalt"))
    by_vote = jax.device_get(select_trajectories(results, "vote"))
    np.testing.assert_array_equal(by_qhalt["trajectory_index"], [1, 0, 2, 0])
    np.testing.assert_array_equal(by_vote["trajectory_index"], [1, 1, 2, 1])
    np.testing.assert_array_equal(by_qhalt["preds"][:, 0], [5, 1, 8, 4])
    np.testing.assert_array_equal(by_vote["preds"][:, 0], [5, 2, 8, 6])
    np.testing.assert_array_equal(by_qhalt["agreement"], [4, 1, 2, 1])
    np.testing.assert_array_equal(by_vote["agreement"], [4, 2, 2, 2])
    for out in (by_qhalt, by_vote):
        np.testing.assert_array_equal(out["exact_qhalt"], [False, True, True, False])
        np.testing.assert_array_equal(out["exact_vote"], [False, False, True, True])
        np.testing.assert_array_equal(out["oracle_exact"], [False, True, True, True])
        np.testing.assert_array_equal(out["trajectory_steps"], [12] * 4)
    np.testing.assert_array_equal(by_qhalt["exact"], by_qhalt["exact_qhalt"])
    np.testing.assert_array_equal(by_vote["exact"], by_vote["exact_vote"])
    np.testing.assert_array_equal(by_vote["q_halt_logits"], np.float32([0.3, 1.0, 0.5, 1.0]))


def test_plain_sampling_is_the_deterministic_solver():
    """K = 1, sigma = 0 returns the keys and values of the solver without sampling, fixed and
    adaptive (the evaluation a run does today); the batch evaluation step stays the fixed path."""
    config, variables, puzzles = setup()
    for policy in (inf.HaltingPolicy("fixed"), inf.HaltingPolicy("adaptive")):
        want = jax.device_get(inf.make_solver(config, num_slots=4, policy=policy)(variables, puzzles))
        got = jax.device_get(
            inf.make_solver(config, num_slots=4, policy=policy, sampling=TrajectorySampling(1, 0.0, "vote"))(
                variables, puzzles
            )
        )
        assert set(got) == set(want)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{policy.mode} {key}")


def alone_with_noise(config, variables, puzzles, policy, sampling, key):
    """Each (puzzle, trajectory) run by itself, one row, step by step: its noise drawn straight
    from (puzzle, trajectory, step), added to z_L, then one evaluation step, until the policy
    stops it. Returns [N, K] steps and q_halt logits and [N, K, S] answers."""
    run_config = config.replace(halt_max_steps=policy.cap(config))
    buffers, params = variables["buffers"], variables["params"]

    @jax.jit
    def step(carry, puzzle, trajectory):
        draw = trajectory_noise(
            jax.random.fold_in(key, NOISE_SALT["z_L"]),
            puzzle,
            trajectory,
            carry.steps[0],
            carry.z_L.shape[1:],
            jnp.float64,
        )
        carry = carry.replace(z_L=carry.z_L + sampling.noise * draw[None])
        rows = gather_puzzle_rows(config, buffers, carry.current_data["puzzle_identifiers"])
        return advance(run_config, params, carry, rows, None, training=False)

    n, k = puzzles["inputs"].shape[0], sampling.trajectories
    out = {
        "steps": np.zeros((n, k), np.int32),
        "q_halt_logits": np.zeros((n, k)),
        "preds": np.zeros((n, k, puzzles["inputs"].shape[1]), np.int32),
    }
    for i in range(n):
        row = {name: v[i : i + 1] for name, v in puzzles.items()}
        for t in range(k):
            carry = reset_halted(config, buffers, initial_carry(config, row), row)
            while True:
                carry, outputs = step(carry, i, t)
                q = float(outputs["q_halt_logits"][0])
                if q > policy.logit_threshold() or bool(carry.halted[0]):
                    break
            out["steps"][i, t], out["q_halt_logits"][i, t] = int(carry.steps[0]), q
            out["preds"][i, t] = np.asarray(jnp.argmax(outputs["logits"][0], -1))
    return out


NOISE_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import jax, jax.numpy as jnp, numpy as np
    from test_inference import setup
    from test_trajectories import alone_with_noise
    from trm_jax import inference as inf
    from trm_jax.train import parallel
    from trm_jax.trajectories import TrajectorySampling

    assert jax.device_count() == 8 and jax.config.jax_enable_x64
    config, variables, puzzles = setup(n=5)
    config = config.replace(forward_dtype="float64")
    variables = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x, variables)
    policy, sampling, key = inf.HaltingPolicy("adaptive"), TrajectorySampling(3, 0.5), jax.random.key(7)
    want = alone_with_noise(config, variables, puzzles, policy, sampling, key)
    assert len(set(want["steps"].ravel().tolist())) >= 3, want["steps"]
    assert len({{a.tobytes() for a in want["preds"][0]}}) > 1, "the noise changes no answer"
    for name, slots, mesh in [("3 slots, 1 device", 3, None), ("5 slots, 1 device", 5, None),
                              ("8 slots, 8 devices", 8, parallel.make_mesh())]:
        run = jax.jit(lambda v, p, k: inf.run_trajectories(config, v, p, num_slots=slots, policy=policy,
                                                            sampling=sampling, key=k))
        if mesh is None:
            got = jax.device_get(run(variables, puzzles, key))
        else:
            got = jax.device_get(inf.make_solver(config, num_slots=slots, policy=policy, sampling=sampling,
                                                 mesh=mesh)(variables, puzzles, key))
            picked = want["q_halt_logits"].argmax(1)
            np.testing.assert_array_equal(got["steps"], want["steps"][np.arange(5), picked], err_msg=name)
            np.testing.assert_array_equal(got["preds"], want["preds"][np.arange(5), picked], err_msg=name)
            print("NOISE_OK", name)
            continue
        np.testing.assert_array_equal(got["steps"], want["steps"], err_msg=name)
        np.testing.assert_array_equal(got["preds"], want["preds"], err_msg=name)
        np.testing.assert_allclose(got["q_halt_logits"], want["q_halt_logits"], rtol=1e-9, atol=1e-12, err_msg=name)
        print("NOISE_OK", name)
""")


def test_each_trajectory_is_its_puzzle_run_alone_with_its_noise_on_1_and_8_devices():
    """5 puzzles x 3 noisy trajectories, adaptive halting: through 3 or 5 slots on one device each
    trajectory gives the steps, answer and halt logit of its puzzle run alone with the noise of
    (puzzle, trajectory, step); over 8 slots on 8 devices the chosen answers are the same. So the
    noise does not depend on the slot or device. float64, as the solver's own test: the rows'
    matmuls differ in shape, and float64 keeps their rounding (~1e-16) from moving a decision."""
    out = run_with_devices(NOISE_SCRIPT.format(tests=str(TESTS_DIR)), x64=True)
    assert out.count("NOISE_OK") == 3, out


ZERO_NOISE_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import jax, jax.numpy as jnp, numpy as np
    from test_inference import setup
    from trm_jax import inference as inf
    from trm_jax.trajectories import TrajectorySampling

    config, variables, puzzles = setup()
    config = config.replace(forward_dtype="float64")
    variables = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x, variables)
    for policy in (inf.HaltingPolicy("fixed"), inf.HaltingPolicy("adaptive")):
        one = jax.device_get(inf.make_solver(config, num_slots=4, policy=policy)(variables, puzzles))
        for select in ("qhalt", "vote"):
            many = jax.device_get(inf.make_solver(config, num_slots=4, policy=policy,
                                                  sampling=TrajectorySampling(4, 0.0, select))(variables, puzzles))
            np.testing.assert_array_equal(many["agreement"], 4)
            np.testing.assert_array_equal(many["trajectory_steps"], 4 * one["steps"])
            for key in ("preds", "steps", "exact", "num_labels"):
                np.testing.assert_array_equal(many[key], one[key], err_msg=key)
            for key in ("q_halt_logits", "accuracy", "lm_loss"):
                np.testing.assert_allclose(many[key], one[key], rtol=1e-9, atol=1e-12, err_msg=key)
            np.testing.assert_array_equal(many["oracle_exact"], one["exact"])
            print("ZERO_OK", policy.mode, select)
""")


def test_trajectories_without_noise_are_copies_of_one_run():
    """K = 4 trajectories without noise all reach the one deterministic answer (agreement 4) and
    either rule reports the K = 1 result, at 4x its steps. float64: the copies run in other
    slot positions next to other neighbours (rounding ~1e-16, see the solver's tests)."""
    out = run_with_devices(ZERO_NOISE_SCRIPT.format(tests=str(TESTS_DIR)), devices=1, x64=True)
    assert out.count("ZERO_OK") == 4, out


def test_summary_of_trajectories():
    config, variables, puzzles = setup()
    solver = inf.make_solver(
        config, num_slots=4, policy=inf.HaltingPolicy("adaptive"), sampling=TrajectorySampling(3, 0.3)
    )
    results = jax.device_get(solver(variables, puzzles, jax.random.key(0)))
    again = jax.device_get(solver(variables, puzzles, jax.random.key(0)))
    for key in results:  # a key makes a run repeatable
        np.testing.assert_array_equal(results[key], again[key], err_msg=key)
    summary = inf.summarize(results, CAP)
    assert summary["trajectory_steps"] == pytest.approx(results["trajectory_steps"].mean())
    assert summary["oracle_exact"] >= max(summary["exact_qhalt"], summary["exact_vote"])
    assert 1.0 <= summary["agreement"] <= 3.0
