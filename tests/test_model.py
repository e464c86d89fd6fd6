"""Properties of the TRM core: config validation, shapes, scans, dtypes, losses, interop."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from test_parity import FIXTURE_DIR, Fixture
from trm_jax import interop
from trm_jax.config import ConfigError, TRMConfig
from trm_jax.losses import act_loss, softmax_cross_entropy
from trm_jax.model import act
from trm_jax.model.network import count_params, init_variables
from trm_jax.train import step as step_lib
from trm_jax.train.state import create_train_state
from trm_jax.train.step import compute_gradients
from trm_test_utils import random_batch, tiny_model_config, tiny_optim_config


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("num_heads", 3, "multiple of num_heads"),
        ("pos_encodings", "alibi", "pos_encodings"),
        ("forward_dtype", "float16", "forward_dtype"),
        ("loss_type", "mse", "loss_type"),
        ("H_cycles", 0, "positive integer"),
        ("halt_exploration_prob", 1.5, "probability"),
        ("forward_dtype", "float64", "JAX_ENABLE_X64"),  # this process runs 32-bit JAX
        ("saved_activations", "some", "saved_activations"),
    ],
)
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ConfigError, match=message):
        tiny_model_config(**{field: value})


def test_config_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="unknown TRMConfig field.*hiden_size"):
        TRMConfig.from_dict({"seq_len": 4, "vocab_size": 3, "hiden_size": 8})


def test_prefix_len_follows_reference():
    assert tiny_model_config(puzzle_emb_len=0, puzzle_emb_ndim=70, hidden_size=32).prefix_len == 3
    assert tiny_model_config(puzzle_emb_len=5).prefix_len == 5


class TestActStep(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_shapes_and_dtypes(self):
        config = tiny_model_config()
        variables = init_variables(config, jax.random.key(0))
        batch = {k: jnp.asarray(v) for k, v in random_batch(config, 4, 0).items()}
        step = self.variant(lambda v, c, b, r: act.act_step(config, v, c, b, r, training=True))
        carry, outputs = step(variables, act.initial_carry(config, batch), batch, jax.random.key(1))
        chex.assert_shape([carry.z_H, carry.z_L], (4, config.total_len, config.hidden_size))
        chex.assert_type([carry.z_H, carry.z_L], jnp.float32)
        chex.assert_shape(outputs["logits"], (4, config.seq_len, config.vocab_size))
        chex.assert_shape([outputs["q_halt_logits"], outputs["q_continue_logits"]], (4,))
        chex.assert_type([outputs["q_halt_logits"], outputs["q_continue_logits"]], jnp.float32)
        chex.assert_type(carry.steps, jnp.int32)
        chex.assert_type(carry.halted, jnp.bool_)
        np.testing.assert_array_equal(carry.steps, 1)
        for key, value in batch.items():  # every row was halted, so every row was loaded
            np.testing.assert_array_equal(carry.current_data[key], value)


def test_bfloat16_forward_close_to_float32():
    """Same weights, compute in bfloat16: one step's logits within 10% (max) / 8% (mean)."""
    fixture = Fixture(str(FIXTURE_DIR / "trm_att_rope.npz"))
    batch = fixture.batch("eval/")

    def logits(config):
        carry = act.initial_carry(config, batch)
        _, outputs = act.act_step(config, fixture.variables, carry, batch, training=False)
        return outputs["logits"]

    ref = np.asarray(logits(fixture.config))
    bf16 = logits(fixture.config.replace(forward_dtype="bfloat16"))
    chex.assert_type(bf16, jnp.bfloat16)
    diff = np.abs(np.asarray(bf16, np.float32) - ref)
    assert diff.max() / np.abs(ref).max() < 0.10
    assert diff.mean() / np.abs(ref).mean() < 0.08
    assert (np.argmax(np.asarray(bf16, np.float32), -1) == np.argmax(ref, -1)).mean() > 0.9


def _equation_count(config: TRMConfig) -> int:
    variables = init_variables(config, jax.random.key(0))
    batch = {k: jnp.asarray(v) for k, v in random_batch(config, 2, 0).items()}
    carry = act.initial_carry(config, batch)

    def loss(params):
        new_carry, outputs = act.act_step(
            config, dict(variables, params=params), carry, batch, jax.random.key(0), training=True
        )
        return act_loss(config, new_carry.halted, new_carry.steps, new_carry.current_data["labels"], outputs)[0]

    forward = jax.make_jaxpr(loss)(variables["params"])
    backward = jax.make_jaxpr(jax.grad(loss))(variables["params"])
    return len(forward.jaxpr.eqns) + len(backward.jaxpr.eqns)


def test_traced_program_does_not_grow_with_cycles():
    base = _equation_count(tiny_model_config(L_cycles=2, H_cycles=2))
    assert _equation_count(tiny_model_config(L_cycles=16, H_cycles=2)) == base
    assert _equation_count(tiny_model_config(L_cycles=2, H_cycles=8)) == base


def test_no_puzzle_embedding_with_prefix_positions():
    """The reference crashes for puzzle_emb_ndim=0 with puzzle_emb_len>0; we use zero rows."""
    config = tiny_model_config(puzzle_emb_ndim=0, puzzle_emb_len=4)
    variables = init_variables(config, jax.random.key(0))
    assert variables["buffers"]["puzzle_emb"].shape == (config.num_puzzle_identifiers, 0)
    batch = {k: jnp.asarray(v) for k, v in random_batch(config, 4, 0).items()}
    state = create_train_state(config, tiny_optim_config(global_batch_size=4), jax.random.key(0), variables=variables)
    new_state, metrics = jax.jit(step_lib.make_train_step(config, tiny_optim_config(global_batch_size=4)))(state, batch)
    assert new_state.carry.z_H.shape == (4, config.seq_len + 4, config.hidden_size)
    assert np.isfinite(float(metrics["loss"]))


def test_softmax_loss_matches_optax():
    logits = jax.random.normal(jax.random.key(0), (3, 5, 7))
    labels = jnp.array(np.random.default_rng(0).integers(0, 7, (3, 5)))
    labels = labels.at[0, 0].set(-100)
    mask = labels != -100
    ours = softmax_cross_entropy(logits, labels, mask)
    ref = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(mask, labels, 0))
    np.testing.assert_allclose(ours, jnp.where(mask, ref, 0.0), rtol=1e-6)


def test_softmax_loss_trains():
    config = tiny_model_config(loss_type="softmax_cross_entropy")
    _assert_train_step_finite(config)


def test_q_continue_target_path():
    """no_ACT_continue=False: the bootstrapped target exists and the continue head learns."""
    config = tiny_model_config(no_ACT_continue=False)
    variables = init_variables(config, jax.random.key(0))
    # At init every Q logit is exactly -5, so the target equals sigmoid(q_continue) and the
    # gradient vanishes; a random Q head makes the test informative.
    q_head = variables["params"]["q_head"]
    q_head["kernel"] = jax.random.normal(jax.random.key(3), q_head["kernel"].shape)
    batch = {k: jnp.asarray(v) for k, v in random_batch(config, 4, 0).items()}
    carry, outputs = act.act_step(
        config, variables, act.initial_carry(config, batch), batch, jax.random.key(0), training=True
    )
    target = outputs["target_q_continue"]
    chex.assert_shape(target, (4,))
    assert bool(jnp.all((target > 0) & (target < 1)))
    _, metrics = act_loss(config, carry.halted, carry.steps, carry.current_data["labels"], outputs)
    assert "q_continue_loss" in metrics
    state = create_train_state(config, tiny_optim_config(global_batch_size=4), jax.random.key(0), variables=variables)
    _, _, _, grads, _, _ = compute_gradients(config, state, batch, jax.random.key(0))
    q_kernel_grad = np.asarray(grads["q_head"]["kernel"])
    assert np.abs(q_kernel_grad[:, 1]).sum() > 0  # the continue logit receives gradient


def _assert_train_step_finite(config):
    optim_config = tiny_optim_config(global_batch_size=4)
    state = create_train_state(config, optim_config, jax.random.key(0))
    batch = {k: jnp.asarray(v) for k, v in random_batch(config, 4, 0).items()}
    _, metrics = jax.jit(step_lib.make_train_step(config, optim_config))(state, batch)
    assert np.isfinite(float(metrics["loss"]))


REMAT_SCRIPT = """
import sys
import chex, jax, jax.numpy as jnp
sys.path.insert(0, {tests!r})
from trm_test_utils import random_batch, tiny_model_config, tiny_optim_config
from trm_jax.train.state import create_train_state
from trm_jax.train.step import compute_gradients

config = tiny_model_config(forward_dtype="float64")
batch = {{k: jnp.asarray(v) for k, v in random_batch(config, 4, 0).items()}}
state = create_train_state(config, tiny_optim_config(global_batch_size=4), jax.random.key(0))
plain = jax.jit(lambda s: compute_gradients(config, s, batch, jax.random.key(1)))(state)
remat = jax.jit(lambda s: compute_gradients(config.replace(remat=True), s, batch,
                                            jax.random.key(1)))(state)
assert plain[3]["lm_head"]["kernel"].dtype == jnp.float64
chex.assert_trees_all_close(plain[3], remat[3], rtol={rtol!r}, atol={atol!r})
chex.assert_trees_all_close(plain[5], remat[5], rtol={rtol!r}, atol={atol!r})
print("REMAT_OK")
"""


def test_remat_gives_the_same_gradients():
    """Recomputing the forward pass (jax.checkpoint) changes no gradient.

    Compared in float64: XLA may fuse the recomputed operations differently, which in float32
    moves gradients by rounding amplified through the recursion, by an amount that depends on
    the CPU. In float64 that rounding is ~1e-16 relative; 1e-10 leaves a 1e4 amplification
    margin and is far below any real difference (a wrong saved residual changes gradients at
    O(1)).
    """
    from test_train_step import TESTS_DIR, run_with_devices  # noqa: PLC0415

    out = run_with_devices(REMAT_SCRIPT.format(tests=str(TESTS_DIR), rtol=1e-10, atol=1e-14), devices=1, x64=True)
    assert "REMAT_OK" in out


LAYOUT_SCRIPT = """
import sys
import chex, jax, jax.numpy as jnp, numpy as np
sys.path.insert(0, {tests!r})
from trm_test_utils import random_batch, tiny_model_config, tiny_optim_config
from trm_jax.model.layers import SequenceSwiGLU, SwiGLU
from trm_jax.train.state import create_train_state
from trm_jax.train.step import compute_gradients

# SequenceSwiGLU on [L, B, D] is SwiGLU on the tensor moved to [B, D, L], with its parameters.
x = jnp.asarray(np.random.default_rng(0).standard_normal((19, 3, 8)))  # [L, B, D] float64
params = SwiGLU(2.0, jnp.float64).init(jax.random.key(0), jnp.moveaxis(x, 0, -1))
moved = jnp.moveaxis(SwiGLU(2.0, jnp.float64).apply(params, jnp.moveaxis(x, 0, -1)), -1, 0)
leading = SequenceSwiGLU(2.0, jnp.float64).apply(params, x)
assert leading.dtype == jnp.float64 and leading.shape == x.shape
chex.assert_trees_all_close(leading, moved, rtol={rtol!r}, atol={atol!r})

# Keeping only the (wide) matrix products' outputs for the backward pass (recomputing the
# rest) changes no gradient, for attention and mlp_t models.
for model in (dict(), dict(mlp_t=True, pos_encodings="none")):
    config = tiny_model_config(forward_dtype="float64", **model)
    batch = {{k: jnp.asarray(v) for k, v in random_batch(config, 4, 0).items()}}
    state = create_train_state(config, tiny_optim_config(global_batch_size=4), jax.random.key(0))
    grads = {{}}
    for saved in ("matmuls", "wide_matmuls", "all"):
        run = config.replace(saved_activations=saved)
        grads[saved] = jax.jit(lambda s: compute_gradients(run, s, batch, jax.random.key(1)))(state)
    for saved in ("matmuls", "wide_matmuls"):
        chex.assert_trees_all_close(grads[saved][3], grads["all"][3], rtol={rtol!r}, atol={atol!r})
        chex.assert_trees_all_close(grads[saved][5], grads["all"][5], rtol={rtol!r}, atol={atol!r})
print("LAYOUT_OK")
"""


def test_sequence_major_token_mixing_and_saved_activations_change_no_value():
    """The mlp_t token mixing on sequence-major activations is the official SwiGLU along the
    sequence, and ``saved_activations="matmuls"`` and ``"wide_matmuls"`` give the gradients
    of ``"all"``.

    Both change only the order of floating-point operations (a summation order inside the
    matrix products; where element-wise values are recomputed), so they are compared in
    float64, where that is ~1e-16 relative: 1e-10 leaves a 1e4 amplification margin through
    the recursion and is far below any real difference (a wrong axis or a wrong saved value
    is an O(1) change).
    """
    from test_train_step import TESTS_DIR, run_with_devices  # noqa: PLC0415

    out = run_with_devices(LAYOUT_SCRIPT.format(tests=str(TESTS_DIR), rtol=1e-10, atol=1e-14), devices=1, x64=True)
    assert "LAYOUT_OK" in out


def test_sequence_swiglu_has_the_parameters_of_swiglu():
    """Same parameter tree, shapes and initial values as the [.., L] SwiGLU it replaces, so
    checkpoints, interop and the initialisation are unchanged."""
    from trm_jax.model.layers import SequenceSwiGLU, SwiGLU  # noqa: PLC0415

    x = jnp.ones((19, 3, 8))  # [L, B, D]
    ours = SequenceSwiGLU(4.0).init(jax.random.key(5), x)
    theirs = SwiGLU(4.0).init(jax.random.key(5), jnp.moveaxis(x, 0, -1))
    chex.assert_trees_all_equal(ours, theirs)


def _walk_eqns(jaxpr):
    """Every equation of a jaxpr and of the jaxprs nested in its equations' parameters."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _walk_eqns(inner)


def _activation_transposes(**overrides) -> list[tuple[int, ...]]:
    """Shapes of the [B, L, D]-sized (rank-3) tensors transposed in the mlp_t train step."""
    config = tiny_model_config(mlp_t=True, pos_encodings="none", **overrides)
    optim_config = tiny_optim_config(global_batch_size=4)
    state = create_train_state(config, optim_config, jax.random.key(0))
    batch = {k: jnp.asarray(v) for k, v in random_batch(config, 4, 0).items()}
    jaxpr = jax.make_jaxpr(step_lib.make_train_step(config, optim_config))(state, batch).jaxpr
    return [
        tuple(e.invars[0].aval.shape)
        for e in _walk_eqns(jaxpr)
        if e.primitive.name == "transpose" and len(e.invars[0].aval.shape) == 3
    ]


@pytest.mark.parametrize("saved_activations", ["matmuls", "all"])
def test_mlp_t_blocks_transpose_no_activation(saved_activations):
    """The mlp_t blocks mix tokens without transposing activations: the recursion runs on
    sequence-major tensors (``to_recursion_layout``), so the only [B, L, D]-sized transposes
    of the train step are the layout changes around the recursion, once per ACT step (the
    carry and input in, the outputs back, and their backward). Their number does not depend
    on the number of blocks; the [B, L, D] formulation transposed twice in every block.
    (The 2-D transposes JAX's dot rules emit in the backward pass are folded into the matrix
    products by XLA and are not counted.)
    """
    one = _activation_transposes(L_layers=1, saved_activations=saved_activations)
    three = _activation_transposes(L_layers=3, saved_activations=saved_activations)
    assert sorted(one) == sorted(three), (one, three)
    assert all(sorted(s) == [4, 18, 32] for s in one), one  # [B, L, D] <-> [L, B, D] only
    assert 0 < len(one) <= 8, one


def test_param_count_of_paper_sudoku_mlp():
    """The paper's Sudoku MLP model has about 5M parameters (abstract init only)."""
    config = TRMConfig(
        seq_len=81,
        vocab_size=11,
        num_puzzle_identifiers=1,
        puzzle_emb_ndim=512,
        mlp_t=True,
        pos_encodings="none",
        L_cycles=6,
        H_cycles=3,
    )
    variables = jax.eval_shape(lambda: init_variables(config, jax.random.key(0)))
    assert 4.5e6 < count_params(variables) < 5.5e6


# --- interop --------------------------------------------------------------------------


def test_torch_checkpoint_with_prefixes_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    fixture = Fixture(str(FIXTURE_DIR / "trm_att_rope.npz"))
    state_dict = interop.to_torch_state_dict(fixture.variables)
    path = tmp_path / "official.pt"
    torch.save({"_orig_mod.model." + k: torch.from_numpy(v) for k, v in state_dict.items()}, path)
    loaded = interop.load_torch_checkpoint(path, fixture.config)
    chex.assert_trees_all_equal(loaded, fixture.variables)
    out = tmp_path / "ours.pt"
    interop.save_torch_checkpoint(loaded, out)
    again = torch.load(out, weights_only=True)
    assert set(again) == set(state_dict)
    for key, value in state_dict.items():
        np.testing.assert_array_equal(again[key].numpy(), value)


def test_torch_checkpoint_of_another_architecture_is_rejected():
    fixture = Fixture(str(FIXTURE_DIR / "trm_att_rope.npz"))
    state_dict = interop.to_torch_state_dict(fixture.variables)
    with pytest.raises(interop.CheckpointMismatchError, match="has shape .* the config needs"):
        interop.from_torch_state_dict(state_dict, fixture.config.replace(hidden_size=128))
    with pytest.raises(interop.CheckpointMismatchError, match="missing key.*mlp_t"):
        interop.from_torch_state_dict(state_dict, fixture.config.replace(mlp_t=True))
