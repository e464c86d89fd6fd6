"""The test-time depth curve: its trace equals evaluate_to_halt step by step, and its summary."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trm_jax.model.act import evaluate_to_halt
from trm_jax.model.network import init_variables
from trm_jax.train import depth_curve as depth
from trm_test_utils import random_batch, tiny_model_config


def test_depth_points():
    assert depth.depth_points(16, 4) == [1, 2, 4, 8, 16]
    assert depth.depth_points(12, 3) == [1, 2, 3, 4, 8, 12]
    assert depth.depth_points(3, 16) == [1, 2, 3]
    assert depth.depth_points(1, 1) == [1]


def test_trace_is_evaluate_to_halt_at_every_depth():
    """Column k of the trace is what evaluate_to_halt(num_steps=k + 1) gives, also past halt_max_steps.

    The labels are the model's own answers after 2 steps on half the rows (and those after 5 on
    the other half), so ``exact`` is True somewhere and False elsewhere, and a trace off by one
    step, or one that resets rows at halt_max_steps, fails.
    """
    config = tiny_model_config(halt_max_steps=3)
    variables = init_variables(config, jax.random.key(0))
    batch = {k: jnp.asarray(v) for k, v in random_batch(config, 8, seed=1).items()}
    preds = {n: jnp.argmax(evaluate_to_halt(config, variables, batch, n)[1]["logits"], -1) for n in (2, 5)}
    q_halt = {n: evaluate_to_halt(config, variables, batch, n)[1]["q_halt_logits"] for n in range(1, 7)}
    labels = jnp.where(jnp.arange(8)[:, None] < 4, preds[2], preds[5])
    labels = labels.at[:, -2:].set(-100)  # ignored cells do not count
    batch = dict(batch, labels=labels.astype(jnp.int32))

    trace = jax.jit(lambda v, b: depth.depth_trace(config, v, b, 6))(variables, batch)
    exact = np.asarray(trace["exact"])
    assert exact.shape == (8, 6) and bool(np.all(trace["valid"]))
    assert exact[:4, 1].all() and exact[4:, 4].all()
    for n in range(1, 7):
        want = np.asarray(
            jnp.all(
                (jnp.argmax(evaluate_to_halt(config, variables, batch, n)[1]["logits"], -1) == labels)
                | (labels == -100),
                -1,
            )
        )
        np.testing.assert_array_equal(exact[:, n - 1], want, err_msg=f"depth {n}")
        # float32 noise: the two scans may fuse differently; the values are O(1) logits.
        np.testing.assert_allclose(
            np.asarray(trace["q_halt_logits"][:, n - 1]), np.asarray(q_halt[n]), rtol=1e-5, atol=1e-5
        )
    assert not exact.all(), "the test needs some wrong answers to mean anything"


def test_padding_rows_are_not_valid():
    config = tiny_model_config()
    variables = init_variables(config, jax.random.key(0))
    batch = {k: jnp.asarray(v) for k, v in random_batch(config, 4, seed=2).items()}
    batch["labels"] = batch["labels"].at[2:].set(-100)
    trace = depth.depth_trace(config, variables, batch, 2)
    np.testing.assert_array_equal(np.asarray(trace["valid"]), [True, True, False, False])


def test_summary_halts_at_the_first_positive_logit_or_the_cap():
    # 4 puzzles, 6 steps, trained depth 3.
    exact = np.array(
        [
            [0, 1, 1, 1, 1, 1],  # halts at 2 (q > 0 there): right
            [0, 0, 0, 1, 1, 1],  # never says halt: capped at 3, wrong
            [1, 1, 0, 0, 0, 0],  # halts at 1: right
            [0, 0, 1, 1, 1, 1],
        ],
        bool,
    )  # says halt at 5 only (past the cap): capped at 3, right
    q = np.full((4, 6), -1.0)
    q[0, 1] = q[0, 4] = 2.0
    q[2, 0] = 0.5
    q[3, 4] = 3.0
    curve = depth.summarize_trace(exact, q, halt_max_steps=3)
    assert curve.steps == [1, 2, 3, 4, 6]
    assert curve.exact_accuracy == [0.25, 0.5, 0.5, 0.75, 0.75]
    assert curve.halting_mean_steps == pytest.approx((2 + 3 + 1 + 3) / 4)
    assert curve.halting_exact_accuracy == pytest.approx(3 / 4)
    assert curve.halted_by_head == pytest.approx(2 / 4)
    assert curve.num_puzzles == 4
    assert "learned halting: 2.25 steps" in curve.summary()


def test_summary_of_no_puzzles_fails_clearly():
    with pytest.raises(ValueError, match="no test puzzles"):
        depth.summarize_trace(np.zeros((0, 4), bool), np.zeros((0, 4)), 4)


def test_depth_curve_over_batches_and_plot(tmp_path):
    config = tiny_model_config()
    variables = init_variables(config, jax.random.key(0))
    batches = [random_batch(config, 4, seed=s) for s in (3, 4)]
    batches[1]["labels"][3] = -100  # a padding row
    curve = depth.depth_curve(config, variables, batches, max_steps=4)
    assert curve.num_puzzles == 7 and curve.steps == [1, 2, 3, 4]
    path = depth.plot_depth_curve(curve, tmp_path / "d.png", title="t")
    assert path.stat().st_size > 0
    json.dumps(curve.to_dict())
