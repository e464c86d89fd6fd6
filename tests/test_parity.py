"""Parity with golden outputs recorded from the official PyTorch TRM.

Replays every fixture in tests/fixtures, plus every ``*.npz`` in the directories listed in
``TRM_PARITY_FIXTURES`` (colon separated): three training-mode ACT steps with the carry
flowing, and an evaluation run to halt_max_steps. Tolerances: the fixtures' README.
"""

from __future__ import annotations

import glob
import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trm_jax import inference
from trm_jax.config import TRMConfig
from trm_jax.interop import from_torch_state_dict, to_torch_state_dict
from trm_jax.losses import act_loss
from trm_jax.model import act

FIXTURE_DIR = pathlib.Path(__file__).parent / "fixtures"
ACT_RTOL, ACT_ATOL = 1e-4, 1e-5
# The recursion amplifies float32 rounding: in our own code, perturbing every weight of the
# mlp_t fixture by a relative 1e-7 moves z_H by 8.6e-6, 2.0e-5 and 1.3e-4 (relative to its
# max) after steps 0, 1 and 2 (measured, tests/test_parity.py history). Later steps of the
# flowing carry therefore get a tolerance above that amplified rounding noise.
LATER_STEP_ACT_RTOL = 3e-4
LOSS_RTOL = 1e-5
GRAD_RTOL = 1e-3
GRAD_ATOL = 1e-7  # gradients that are ~0 (e.g. of rows the step does not reach)
METRIC_ATOL = 1e-6  # metrics are sums of float32 values and counts


def fixture_paths() -> list[str]:
    paths = sorted(glob.glob(str(FIXTURE_DIR / "*.npz")))
    for directory in filter(None, os.environ.get("TRM_PARITY_FIXTURES", "").split(":")):
        found = sorted(glob.glob(os.path.join(directory, "*.npz")))
        if not found:
            raise FileNotFoundError(f"TRM_PARITY_FIXTURES names {directory!r}, which holds no *.npz")
        paths += found
    return paths


class Fixture:
    def __init__(self, path: str):
        self.path = path
        self.data = np.load(path)
        raw = json.loads(str(self.data["config"]))
        self.config = TRMConfig.from_dict(raw)
        self.variables = from_torch_state_dict(
            {k[len("param/") :]: self.data[k] for k in self.data.files if k.startswith("param/")},
            self.config,
            source=path,
        )

    def group(self, prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix) :]: self.data[k] for k in self.data.files if k.startswith(prefix)}

    def batch(self, prefix: str) -> dict[str, jax.Array]:
        return {k: jnp.asarray(v) for k, v in self.group(prefix + "batch/").items()}


def _forward_dtype(path: str) -> str:
    with np.load(path) as data:
        return json.loads(str(data["config"]))["forward_dtype"]


FLOAT32_PATHS, BFLOAT16_PATHS = [], []
for _path in fixture_paths():
    (BFLOAT16_PATHS if _forward_dtype(_path) == "bfloat16" else FLOAT32_PATHS).append(_path)


@pytest.fixture(scope="module", params=FLOAT32_PATHS, ids=lambda p: pathlib.Path(p).stem)
def fixture(request) -> Fixture:
    return Fixture(request.param)


@pytest.fixture(scope="module", params=BFLOAT16_PATHS, ids=lambda p: pathlib.Path(p).stem)
def bf16_fixture(request) -> Fixture:
    return Fixture(request.param)


def assert_close(actual, expected, rtol, atol, what):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(np.max(np.abs(expected)), 1e-12)
    err = np.max(np.abs(actual - expected)) if actual.size else 0.0
    assert err <= atol + rtol * scale, f"{what}: max abs err {err:.3g}, scale {scale:.3g}"


def train_step_with_grads(config, variables, carry, batch, min_halt_steps=None):
    """One training ACT step and the gradient of its (undivided) loss; ``min_halt_steps``
    replays the reference's exploration draws (fixtures with ``halt_exploration_prob > 0``)."""
    carry = act.reset_halted(config, variables["buffers"], carry, batch)
    rows = act.gather_puzzle_rows(config, variables["buffers"], carry.current_data["puzzle_identifiers"])

    def loss_fn(params, rows):
        new_carry, outputs = act.advance(
            config, params, carry, rows, None, training=True, min_halt_steps=min_halt_steps
        )
        loss, metrics = act_loss(config, new_carry.halted, new_carry.steps, new_carry.current_data["labels"], outputs)
        return loss, (new_carry, outputs, metrics)

    (loss, aux), grads = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True))(variables["params"], rows)
    return loss, aux, grads


def test_weights_round_trip(fixture):
    state = to_torch_state_dict(fixture.variables)
    for name, value in state.items():
        np.testing.assert_array_equal(value, fixture.data["param/" + name])


def test_three_training_steps(fixture):
    config, variables = fixture.config, fixture.variables
    batch0 = fixture.batch("step0/")
    carry = act.initial_carry(config, batch0)
    for step in range(3):
        prefix = f"step{step}/"
        carry_in = fixture.group(prefix + "carry_in/")
        # Rows that are not halted must carry exactly the reference's state.
        live = ~carry_in["halted"]
        np.testing.assert_array_equal(np.asarray(carry.halted), carry_in["halted"])
        np.testing.assert_array_equal(np.asarray(carry.steps)[live], carry_in["steps"][live])
        if live.any():
            assert_close(
                np.asarray(carry.z_H)[live],
                carry_in["z_H"][live],
                LATER_STEP_ACT_RTOL,
                ACT_ATOL,
                f"{prefix}carry_in z_H",
            )

        explore = fixture.data.get(prefix + "min_halt_steps")
        loss, (carry, outputs, metrics), (grads, row_grads) = train_step_with_grads(
            config, variables, carry, fixture.batch(prefix), None if explore is None else jnp.asarray(explore)
        )
        out = fixture.group(prefix + "out/")
        rtol = ACT_RTOL if step == 0 else LATER_STEP_ACT_RTOL
        for key in ("logits", "q_halt_logits", "q_continue_logits"):
            assert_close(outputs[key], out[key], rtol, ACT_ATOL, f"{prefix}{key}")
        np.testing.assert_array_equal(np.argmax(np.asarray(outputs["logits"]), -1), out["preds"])
        assert_close(carry.z_H, out["z_H"], rtol, ACT_ATOL, f"{prefix}z_H")
        assert_close(carry.z_L, out["z_L"], rtol, ACT_ATOL, f"{prefix}z_L")
        np.testing.assert_array_equal(np.asarray(carry.steps), out["steps"])
        np.testing.assert_array_equal(np.asarray(carry.halted), out["halted"])
        for key, value in carry.current_data.items():
            np.testing.assert_array_equal(np.asarray(value), out["current_data/" + key])

        # Later steps' losses inherit the carry's amplified rounding (like its activations).
        loss_rtol = LOSS_RTOL if step == 0 else LATER_STEP_ACT_RTOL
        assert_close(loss, fixture.data[prefix + "loss"], loss_rtol, 0, f"{prefix}loss")
        for key, expected in fixture.group(prefix + "metrics/").items():
            tol = loss_rtol if key.endswith("loss") or key == "accuracy" else 0
            assert_close(metrics[key], expected, tol, METRIC_ATOL, f"{prefix}metrics/{key}")

        expected_grads = fixture.group(prefix + "grad/")
        ours = to_torch_state_dict({"params": grads, "buffers": variables["buffers"]})
        for name, expected in expected_grads.items():
            if name == "puzzle_emb.local_weights":
                actual = row_grads
            else:
                actual = ours[name]
            assert_close(actual, expected, GRAD_RTOL, GRAD_ATOL, f"{prefix}grad/{name}")


def rounding_noise(run, variables, reference: dict, seeds=(0, 1, 2)) -> dict:
    """Relative change of ``run``'s results when every weight moves by ~1 float32 ulp.

    Over halt_max_steps evaluation steps the recursion amplifies rounding; for the mlp_t
    fixture an ulp-level perturbation moves the final logits by ~1e-3 relative (while the
    attention fixtures stay near 1e-5), so a fixed 1e-4 tolerance would test the chaos, not
    the port. The tolerance is instead set above this measured noise floor.
    """
    noise = {k: 0.0 for k in reference}
    for seed in seeds:
        key = jax.random.key(seed)
        perturbed = jax.tree_util.tree_map(lambda x: x * (1 + 1e-7 * jax.random.normal(key, x.shape)), variables)
        results = run(perturbed)
        for k, ref in reference.items():
            ref = np.asarray(ref, np.float64)
            diff = np.max(np.abs(np.asarray(results[k], np.float64) - ref))
            noise[k] = max(noise[k], diff / max(np.max(np.abs(ref)), 1e-12))
    return noise


def test_evaluation_to_halt(fixture):
    config, variables = fixture.config, fixture.variables
    batch = fixture.batch("eval/")
    assert int(fixture.data["eval/num_steps"]) == config.halt_max_steps

    @jax.jit
    def run(v):
        carry, outputs = act.evaluate_to_halt(config, v, batch)
        loss, metrics = act_loss(config, carry.halted, carry.steps, carry.current_data["labels"], outputs)
        return {**outputs, "loss": loss, "halted": carry.halted, **{"metrics/" + k: m for k, m in metrics.items()}}

    ours = run(variables)
    float_keys = ("logits", "q_halt_logits", "loss", "metrics/lm_loss", "metrics/q_halt_loss")
    noise = rounding_noise(run, variables, {k: ours[k] for k in float_keys})
    rtol = {k: max(LOSS_RTOL if "loss" in k else ACT_RTOL, 4 * noise[k]) for k in float_keys}
    # The gate keeps the comparison meaningful (a tolerance near 1 would pass anything). How far
    # the recursion amplifies a one-ulp change depends on the CPU's matmul kernels: the mlp_t
    # fixture's eval logits move by ~1e-3 on an AMD EPYC and by 2.6e-3 on an Intel Xeon
    # (AVX-512), where ours-vs-official is 1.2e-3, so 4x the noise reaches 1e-2 there. A wrong
    # port moves the logits by O(1), and test_parity_float64 pins this evaluation at 1e-9.
    for k, tol in rtol.items():
        assert tol < 5e-2, f"eval {k}: rounding noise {noise[k]:.3g} too large to test"

    for key in ("logits", "q_halt_logits"):
        assert_close(ours[key], fixture.data["eval/out/" + key], rtol[key], ACT_ATOL, f"eval {key}")
    np.testing.assert_array_equal(np.argmax(np.asarray(ours["logits"]), -1), fixture.data["eval/out/preds"])
    assert bool(np.all(np.asarray(ours["halted"])))
    assert_close(ours["loss"], fixture.data["eval/loss"], rtol["loss"], 0, "eval loss")
    for key, expected in fixture.group("eval/metrics/").items():
        tol = rtol.get("metrics/" + key, LOSS_RTOL)
        assert_close(ours["metrics/" + key], expected, tol, METRIC_ATOL, f"eval metrics/{key}")

    # Fixed-depth inference with continuous batching (trm_jax.inference) is the official
    # evaluation too: 3 slots for the fixture's rows, every puzzle halt_max_steps steps.
    solved = inference.make_solver(config, num_slots=3)(variables, batch)
    np.testing.assert_array_equal(np.asarray(solved["preds"]), fixture.data["eval/out/preds"])
    np.testing.assert_array_equal(np.asarray(solved["steps"]), config.halt_max_steps)
    assert_close(
        solved["q_halt_logits"],
        fixture.data["eval/out/q_halt_logits"],
        rtol["q_halt_logits"],
        ACT_ATOL,
        "inference q_halt_logits",
    )


# Half a bfloat16 ulp (8-bit significand): the size of one rounding difference between two
# bfloat16 implementations, applied to every weight.
BF16_HALF_ULP = 2.0**-9


def test_bfloat16_step_within_rounding_noise(bf16_fixture):
    """A bfloat16 training step matches the reference's as closely as bfloat16 rounding lets it.

    Two bfloat16 implementations round differently at every operation (where XLA fuses and
    keeps float32 intermediates, PyTorch rounds each op), and the recursion amplifies that:
    on the fixture, moving every weight by half a bfloat16 ulp moves our step-0 logits by
    3-4% of their scale and the loss by 2e-4 to 1.4e-3 (measured, 3 seeds). Ours and the
    reference's differ by 2% and 8e-5. The test requires our difference from the reference to
    stay within the largest such perturbation effect over 3 seeds, for the logits, Q-halt
    logits, new z_H and the loss; a wrong operation is an O(1) change.
    """
    fixture = bf16_fixture
    config, variables = fixture.config, fixture.variables
    batch = fixture.batch("step0/")

    def run(v):
        loss, (carry, outputs, _), _ = train_step_with_grads(config, v, act.initial_carry(config, batch), batch)
        return {"logits": outputs["logits"], "q_halt_logits": outputs["q_halt_logits"], "z_H": carry.z_H, "loss": loss}

    def relative(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))

    ours = run(variables)
    expected = {
        "logits": fixture.data["step0/out/logits"],
        "z_H": fixture.data["step0/out/z_H"],
        "q_halt_logits": fixture.data["step0/out/q_halt_logits"],
        "loss": fixture.data["step0/loss"],
    }
    noise = {k: 0.0 for k in expected}
    for seed in range(3):
        key = jax.random.key(seed)
        perturbed = run(
            jax.tree_util.tree_map(lambda x: x * (1 + BF16_HALF_ULP * jax.random.normal(key, x.shape)), variables)
        )
        for k in noise:
            noise[k] = max(noise[k], relative(perturbed[k], ours[k]))
    for k, value in expected.items():
        assert noise[k] < 0.2, f"{k}: bfloat16 noise {noise[k]:.3g} too large to test"
        assert relative(ours[k], value) <= noise[k], (
            f"step0 {k}: ours vs reference {relative(ours[k], value):.3g} > noise {noise[k]:.3g}"
        )
