"""Smoke tests of the benchmark harness (benchmarks/), CPU, tiny config.

The comparison against the official PyTorch step runs only when ``TRM_REFERENCE_DIR`` points
at a checkout of SamsungSAILMontreal/TinyRecursiveModels; otherwise that test is skipped
with a message and the rest runs our half alone.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks import common, depth_scaling, step_time
from trm_test_utils import needs_reference, reference_dir

REFERENCE_DIR = reference_dir()
NEEDS_REFERENCE = needs_reference("run the comparison with the PyTorch reference step")


def _check_impl_block(block: dict) -> None:
    times = block["times"]
    assert times["n"] >= 1
    assert 0 < times["min_s"] <= times["median_s"] <= times["max_s"]
    assert block["tokens_per_s"] > 0
    for key in ("compile_s", "first_call_s", "peak_memory_bytes", "mfu", "mfu_xla"):
        assert key in block
    assert block["mfu"] is None  # CPU: no peak-FLOPs figure, so no MFU
    assert block["ceiling_gflops_per_s"] > 0
    assert block["gflops_per_s"] == pytest.approx(block["fraction_of_ceiling"] * block["ceiling_gflops_per_s"])


def _check_step_time_document(doc: dict, with_reference: bool) -> None:
    assert doc["schema"] == step_time.SCHEMA
    for key in ("command", "git_commit", "versions", "host", "timestamp_utc"):
        assert key in doc["meta"]
    assert doc["meta"]["versions"]["jax"]
    assert doc["config"]["name"] == "tiny" and doc["config"]["batch_size"] == 4
    assert doc["config"]["model"]["forward_dtype"] == "float32"
    assert doc["device"]["jax_platform"] == "cpu"
    assert doc["flops_per_step_analytic"] > 0
    _check_impl_block(doc["ours"])
    assert doc["ours"]["compile_s"] > 0
    assert doc["ours"]["xla_memory"] is None or doc["ours"]["xla_memory"]["total_bytes"] > 0
    if with_reference:
        _check_impl_block(doc["reference"])
        assert doc["loss_check"]["status"] == "passed"
        assert doc["loss_check"]["rel_diff"] <= step_time.LOSS_RTOL
        assert math.isfinite(doc["loss_check"]["ours"])
        assert doc["ratio_ours_over_reference"] > 0 and doc["timing"]["interleaved"]
        paired = doc["ratio_paired"]
        assert 0 < paired["min"] <= paired["median"] <= paired["max"]
    else:
        assert doc["reference"] is None and doc["ratio_ours_over_reference"] is None
        assert doc["ratio_paired"] is None and not doc["timing"]["interleaved"]
        assert doc["loss_check"]["status"] == "skipped" and doc["loss_check"]["reason"]


def _run_step_time(tmp_path, extra: list[str]) -> dict:
    argv = [
        "--config",
        "tiny",
        "--batch-size",
        "4",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--device",
        "cpu",
        "--out-dir",
        str(tmp_path),
        *extra,
    ]
    result = step_time.main(argv)
    stem = tmp_path / "step_time_tiny_cpu_float32_b4"
    on_disk = json.loads((stem.with_suffix(".json")).read_text())
    assert on_disk["ours"]["times"] == result["ours"]["times"]
    assert "| ours |" in stem.with_suffix(".md").read_text()
    return on_disk


def test_step_time_ours_only(tmp_path, capsys):
    doc = _run_step_time(tmp_path, ["--skip-reference", "--microbatches", "2"])
    _check_step_time_document(doc, with_reference=False)
    assert doc["config"]["microbatches"] == 2
    assert "reference skipped" in capsys.readouterr().err


@NEEDS_REFERENCE
def test_step_time_against_reference(tmp_path):
    doc = _run_step_time(tmp_path, ["--reference-dir", REFERENCE_DIR, "--profile-dir", str(tmp_path / "prof")])
    _check_step_time_document(doc, with_reference=True)
    # the profiles: traces on disk, and the matrix products' share of each step under them
    profiles = doc["profiles"]
    assert (tmp_path / "prof" / "torch_trace.json").is_file()
    assert 0 < profiles["reference_matmul"]["matmul_ms"] < profiles["reference_matmul"]["total_ms"]
    if profiles["ours_matmul"] is not None:  # None without xprof
        assert 0 < profiles["ours_matmul"]["matmul_ms"] < profiles["ours_matmul"]["total_ms"]
    assert "matrix products per step under the profiler" in (tmp_path / "step_time_tiny_cpu_float32_b4.md").read_text()


def test_loss_check_refuses_different_computations():
    assert step_time.check_same_loss(10.0, 10.0 + 1e-5)["status"] == "passed"
    with pytest.raises(step_time.LossMismatchError, match="refusing to time"):
        step_time.check_same_loss(10.0, 10.01)
    with pytest.raises(step_time.LossMismatchError):
        step_time.check_same_loss(float("nan"), 1.0)


@pytest.mark.slow  # four compiles of the tiny step (~40 s on a busy 2-core machine)
def test_depth_scaling_2x2_grid(tmp_path):
    argv = [
        "train",
        "--config",
        "tiny",
        "--batch-size",
        "4",
        "--L-cycles",
        "1,2",
        "--H-cycles",
        "1,2",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--device",
        "cpu",
        "--skip-reference",
        "--out-dir",
        str(tmp_path),
    ]
    result = depth_scaling.main(argv)
    stem = tmp_path / "depth_scaling_tiny_cpu_float32_b4"
    doc = json.loads(stem.with_suffix(".json").read_text())
    assert doc["schema"] == depth_scaling.TRAIN_SCHEMA
    assert [(p["H_cycles"], p["L_cycles"]) for p in doc["points"]] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert [p["net_calls"] for p in doc["points"]] == [2, 3, 4, 6]
    for p in doc["points"]:
        assert p["ours"]["median_s"] > 0 and p["ours"]["compile_s"] > 0
        assert "reference" not in p
    assert doc["fits"]["ours"]["net_calls"]["slope"] is not None
    assert doc["fits"]["ours"]["forward_equivalent_calls"]["r2"] is not None
    assert stem.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["points"][0]["ours"]["median_s"] == doc["points"][0]["ours"]["median_s"]


def test_inference_sweep_counts_steps(tmp_path):
    argv = [
        "inference",
        "--config",
        "tiny",
        "--max-examples",
        "6",
        "--batch-size",
        "4",
        "--max-steps",
        "5",
        "--device",
        "cpu",
        "--no-plot",
        "--out-dir",
        str(tmp_path),
    ]
    doc = depth_scaling.main(argv)
    assert doc["schema"] == depth_scaling.INFERENCE_SCHEMA
    assert [c["steps"] for c in doc["curve"]] == [1, 2, 3, 4, 5]
    assert doc["rows"] == 8  # two synthetic batches of 4 (every row has labels)
    for c in doc["curve"]:
        for key in ("exact_accuracy", "token_accuracy", "q_halt_positive_fraction"):
            assert 0.0 <= c[key] <= 1.0
    assert (tmp_path / "inference_depth_tiny_random.json").is_file()


def test_dataset_batches_pad_and_map_ignore_label(tmp_path):
    from trm_jax.data.builder import PuzzleBuilder, make_metadata
    from trm_jax.data.format import write_dataset

    builder = PuzzleBuilder(seq_len=3)
    for i in range(5):
        builder.add_puzzle(np.array([[1, 2, 3]]) + i % 2, np.array([[0, 4, 5]]), identifier=0)
        builder.end_group()
    sets = {"all": builder.build()}
    meta = make_metadata(
        sets, pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=8, seq_len=3, num_puzzle_identifiers=1
    )
    write_dataset(
        tmp_path / "d", {"train": sets, "test": sets}, metadata={"train": meta, "test": meta}, identifiers=["<blank>"]
    )
    batches = list(depth_scaling.dataset_batches(str(tmp_path / "d"), batch_size=4, max_examples=5))
    assert len(batches) == 2
    assert batches[0]["labels"][0].tolist() == [-100, 4, 5]
    assert batches[1]["inputs"][0].tolist() == [1, 2, 3]
    assert (batches[1]["labels"][1:] == -100).all()  # padding rows are fully ignored


def test_linear_fit_recovers_a_line():
    fit = depth_scaling.linear_fit([2, 3, 4, 6], [0.5 + 2 * x for x in (2, 3, 4, 6)])
    assert fit["slope"] == pytest.approx(2.0) and fit["intercept"] == pytest.approx(0.5)
    assert fit["r2"] == pytest.approx(1.0)
    assert depth_scaling.linear_fit([3, 3], [1.0, 2.0])["slope"] is None


def test_forward_equivalent_calls():
    # T-1 undifferentiated cycles + the last one forward and backward (2x): (T+2)(n+1)
    assert depth_scaling.forward_equivalent_calls(1, 1) == 6
    assert depth_scaling.forward_equivalent_calls(3, 6) == 35


def test_analytic_flops_scale_with_recursion():
    bench = common.get_config("tiny")
    f = {
        (T, n): common.model_flops_per_step(bench.model_config(4, "float32", H_cycles=T, L_cycles=n), 4)
        for T in (1, 2)
        for n in (1, 3)
    }
    # forward T(n+1) network calls + 2x for the backward of the last cycle's (n+1) calls
    per_call = (f[(2, 1)] - f[(1, 1)]) / 2
    assert f[(2, 3)] - f[(1, 3)] == pytest.approx(4 * per_call)
    assert f[(1, 3)] - f[(1, 1)] == pytest.approx(2 * 3 * per_call)


def test_pure_pytorch_adam_atan2_matches_kernel_formula_and_ours():
    torch = pytest.importorskip("torch")
    import jax.numpy as jnp
    import optax

    from benchmarks.reference_torch import AdamATan2Torch, warmup_cosine_lr
    from trm_jax.train.optim import adam_atan2, warmup_cosine_schedule

    rng = np.random.default_rng(0)
    p0 = rng.normal(size=(3, 4)).astype(np.float32)
    grads = [rng.normal(size=(3, 4)).astype(np.float32) for _ in range(3)]
    lr0, wd, b1, b2, warmup = 1e-2, 0.1, 0.9, 0.95, 2

    param = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    opt = AdamATan2Torch([param], lr=0, betas=(b1, b2), weight_decay=wd)
    p, m, v = p0.astype(np.float64), np.zeros((3, 4)), np.zeros((3, 4))
    tx = adam_atan2(warmup_cosine_schedule(lr0, warmup, 100, 1.0), b1, b2, wd)
    jp = jnp.asarray(p0)
    state = tx.init(jp)
    for t, g in enumerate(grads, start=1):
        lr = warmup_cosine_lr(t, lr0, warmup, 100, 1.0)
        param.grad = torch.from_numpy(g.copy())
        opt.param_groups[0]["lr"] = lr
        opt.step()
        p = p * (1 - lr * wd)
        m = m + (1 - b1) * (g - m)
        v = v + (1 - b2) * (g * g - v)
        p = p - lr / (1 - b1**t) * np.arctan2(m, np.sqrt(v) / np.sqrt(1 - b2**t))
        updates, state = tx.update(jnp.asarray(g), state, jp)
        jp = optax.apply_updates(jp, updates)
    np.testing.assert_allclose(param.detach().numpy(), p, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(jp), p, rtol=1e-6, atol=1e-7)
    assert warmup_cosine_lr(1, 1.0, 4, 10, 0.0) == pytest.approx(0.25)
    assert warmup_cosine_lr(10, 1.0, 4, 10, 0.0) == pytest.approx(0.0)


def test_named_configs_are_valid_and_reference_dir_is_checked(tmp_path, monkeypatch):
    for name, bench in common.NAMED_CONFIGS.items():
        config = bench.model_config(bench.default_batch_size, "bfloat16")
        assert config.H_cycles >= 1 and bench.name == name
    assert common.get_config("sudoku_mlp").model_config(8, "float32").mlp_t
    with pytest.raises(KeyError, match="known: tiny"):
        common.get_config("nope")
    monkeypatch.delenv(common.REFERENCE_ENV, raising=False)
    assert common.resolve_reference_dir(None) is None
    with pytest.raises(FileNotFoundError, match="models/recursive_reasoning/trm.py"):
        common.resolve_reference_dir(str(tmp_path))
    batches = common.synthetic_batches(common.get_config("tiny").model_config(4, "float32"), 4, 2)
    assert len(batches) == 2 and batches[0]["inputs"].dtype == np.int32
    assert (batches[0]["inputs"] >= 1).all() and (batches[0]["labels"] == -100).any()


def test_inference_weights_from_our_checkpoint(tmp_path):
    import jax

    from benchmarks.jax_step import optim_config_for
    from trm_jax.train.checkpoint import Checkpointer
    from trm_jax.train.state import create_train_state

    bench = common.get_config("tiny")
    config = bench.model_config(4, "float32")
    state = create_train_state(config, optim_config_for(bench, 4), jax.random.key(1), batch_size=4)
    state = state.replace(ema=jax.tree_util.tree_map(lambda x: x + 1.0, state.ema))
    with Checkpointer(tmp_path / "checkpoints", async_save=False) as checkpointer:
        checkpointer.save(7, state)
    variables, description = depth_scaling.load_weights(f"checkpoint:{tmp_path}", config, 0)
    assert "checkpoint" in description
    for got, want in zip(
        jax.tree_util.tree_leaves(variables["params"]), jax.tree_util.tree_leaves(state.ema)
    ):  # EMA weights, as evaluated
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    with pytest.raises(ValueError, match="has shape"):
        depth_scaling.load_weights(f"checkpoint:{tmp_path}", config.replace(hidden_size=64, puzzle_emb_ndim=64), 0)
    with pytest.raises(ValueError, match="expected 'random'"):
        depth_scaling.load_weights("bogus", config, 0)


# --- efficiency report and op profile (common.op_breakdown) -------------------------------------------------


def test_efficiency_report(tmp_path):
    """Two configs, interleaved rounds: GFLOP/s, a ceiling and the fraction of it, per row."""
    from benchmarks import efficiency  # noqa: PLC0415

    argv = [
        "--configs",
        "tiny",
        "--batch-sizes",
        "2,4",
        "--rounds",
        "2",
        "--warmup",
        "0",
        "--device",
        "cpu",
        "--set",
        "saved_activations=all",
        "--set",
        "L_cycles=3",
        "--microbatches",
        "1,2",
        "--profile-dir",
        str(tmp_path / "prof"),
        "--out-dir",
        str(tmp_path),
        "--name",
        "t",
    ]
    result = efficiency.main(argv)
    doc = json.loads((tmp_path / "efficiency_t.json").read_text())
    assert doc["schema"] == efficiency.SCHEMA and doc["rows"] == json.loads(json.dumps(result["rows"]))
    assert doc["overrides"] == {"saved_activations": "all", "L_cycles": 3}
    assert [(r["config"], r["batch_size"], r["microbatches"]) for r in doc["rows"]] == [
        ("tiny", 2, 1),
        ("tiny", 2, 2),
        ("tiny", 4, 1),
        ("tiny", 4, 2),
    ]
    for row in doc["rows"]:
        assert len(row["per_round"]) == 2 and row["times"]["n"] == 2
        assert row["ceiling_gflops_per_s"] > 0 and row["gflops_per_s"] > 0
        assert row["flops_per_step"] == common.model_flops_per_step(
            common.get_config("tiny").model_config(row["batch_size"], "float32", L_cycles=3), row["batch_size"]
        )
        low, high = row["fraction_of_ceiling_min_max"]
        assert 0 < low <= row["fraction_of_ceiling"] <= high
        assert row["efficiency_vs_first_config"] == 1.0  # each row is its batch's first config
        assert row["xla_memory"] is None or row["xla_memory"]["temp_size_in_bytes"] > 0
    memory = {(r["batch_size"], r["microbatches"]): r["xla_memory"] for r in doc["rows"]}
    if memory[(4, 1)] is not None:  # chunks of the batch keep fewer activations at once
        assert memory[(4, 2)]["temp_size_in_bytes"] < memory[(4, 1)]["temp_size_in_bytes"]
    markdown = (tmp_path / "efficiency_t.md").read_text()
    assert "| tiny | 4 | 2 |" in markdown and "saved_activations" in markdown
    for prof in doc["profiles"]:
        assert list((tmp_path / "prof").glob("**/*.xplane.pb"))
        if prof["breakdown"] is None:
            assert "xprof" in prof["breakdown_skipped"]
        else:
            shares = [c["share"] for c in prof["breakdown"]["categories"].values()]
            assert abs(sum(shares) - 1) < 1e-9 and prof["breakdown"]["categories"]["matmul"]["ms"] > 0
            row = next(
                r
                for r in doc["rows"]
                if (r["batch_size"], r["microbatches"]) == (prof["batch_size"], prof["microbatches"])
            )
            share = prof["breakdown"]["categories"]["matmul"]["share"]
            assert prof["matmul_only_fraction_of_ceiling"] == pytest.approx(row["fraction_of_ceiling"] / share)
            assert prof["matmul_only_fraction_of_ceiling"] >= row["fraction_of_ceiling"]
            assert "matmuls alone:" in markdown
            busy = prof["breakdown"]["busy_ms"]  # the trace's events carry start times
            assert 0 < busy <= prof["breakdown"]["total_ms"] * (1 + 1e-9)
            assert "at least one operation running during" in markdown


def test_efficiency_rejects_bad_arguments():
    from benchmarks import efficiency  # noqa: PLC0415

    for argv in (
        ["--configs", "nope"],
        ["--batch-sizes", "8,x"],
        ["--rounds", "0"],
        ["--set", "saved_activations"],
        ["--microbatches", "0"],
        ["--batch-sizes", "8", "--microbatches", "3"],
    ):
        with pytest.raises(SystemExit):
            efficiency.parse_args(argv)


def test_network_flops_per_call_make_up_the_step_count():
    """The step's analytic count is T(n+1) forward calls and 2(n+1) backward calls of the
    network, plus three times the heads, for both kinds of token mixing."""
    for name in ("sudoku_mlp", "sudoku_att"):
        config = common.get_config(name).model_config(8, "float32")
        heads = 2.0 * 8 * config.seq_len * config.hidden_size * config.vocab_size + 2.0 * 8 * 512 * 2
        calls = config.H_cycles * (config.L_cycles + 1) + 2 * (config.L_cycles + 1)
        assert common.model_flops_per_step(config, 8) == pytest.approx(
            calls * common.network_flops_per_call(config, 8) + 3 * heads, rel=1e-12
        )


OP_PROFILE_HLO = """
%fused_dot (p0: f32[4,4], p1: f32[4,4]) -> f32[4,4] {
  %p0 = f32[4,4]{1,0} parameter(0)
  %p1 = f32[4,4]{1,0} parameter(1)
  %dot.1 = f32[4,4]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  ROOT %exp.1 = f32[4,4]{1,0} exponential(%dot.1)
}

%fused_transpose (p0: f32[4,4]) -> f32[4,4] {
  %p0 = f32[4,4]{1,0} parameter(0)
  %transpose.1 = f32[4,4]{0,1} transpose(%p0), dimensions={1,0}
  ROOT %copy.1 = f32[4,4]{1,0} copy(%transpose.1)
}

%fused_zeros () -> f32[6,4] {
  %constant.1 = f32[] constant(0)
  ROOT %broadcast.1 = f32[6,4]{1,0} broadcast(%constant.1), dimensions={}
}

ENTRY %main (a: f32[4,4], b: f32[4,4]) -> f32[4,4] {
  %a = f32[4,4]{1,0} parameter(0)
  %b = f32[4,4]{1,0} parameter(1)
  %ynn_fusion.2 = f32[4,4]{1,0} fusion(%a, %b), kind=kCustom, calls=%fused_dot
  %copy_fusion = f32[4,4]{1,0} fusion(%ynn_fusion.2), kind=kLoop, calls=%fused_transpose
  %wrapped_broadcast = f32[6,4]{1,0} fusion(), kind=kLoop, calls=%fused_zeros
  %while.3 = (f32[4,4]) while(%copy_fusion), condition=%cond, body=%body
  ROOT %add.1 = f32[4,4]{1,0} add(%copy_fusion, %a)
}
"""


def test_op_breakdown_sums_events_by_kind_of_operation():
    events = [
        {"name": "ynn_fusion.2", "dur": 3000.0},
        {"name": "copy_fusion", "dur": 1000.0},
        {"name": "wrapped_broadcast", "dur": 500.0},
        {"name": "add.1", "dur": 500.0},
        {"name": "while.3", "dur": 9000.0},  # a loop: its ops are counted, not it
        {"name": "ThunkExecutor::Execute", "dur": 7000.0},  # not an HLO op
        {"name": "ynn_fusion.2", "dur": 3000.0},
    ]
    out = common.op_breakdown(OP_PROFILE_HLO, events, steps=2)
    ms = {c: v["ms"] for c, v in out["categories"].items()}
    assert ms == {"matmul": 3.0, "copy/transpose": 0.5, "broadcast": 0.25, "dynamic slice/update": 0.0, "other": 0.25}
    assert out["total_ms"] == 4.0
    assert out["top_ops"][0] == {"name": "ynn_fusion.2", "category": "matmul", "ms": 3.0}
    assert out["busy_ms"] is None  # no start times in these events
    assert common.categorize("while", set()) is None
    assert common.categorize("fusion", {"dynamic-update-slice", "parameter"}) == "dynamic slice/update"


def test_op_breakdown_busy_time_counts_concurrent_operations_once():
    """Two operations running at the same time sum to more than the time the cores were busy:
    ``busy_ms`` is the union of the intervals, ``total_ms`` the sum of the durations."""
    assert common.busy_time([(0, 2), (1, 3), (5, 6)]) == 4
    assert common.busy_time([(0, 10), (2, 3), (4, 12)]) == 12
    assert common.busy_time([(3, 4), (0, 1)]) == 2
    events = [
        {"name": "ynn_fusion.2", "ts": 0.0, "dur": 3000.0},
        {"name": "copy_fusion", "ts": 1000.0, "dur": 1000.0},  # within the matmul
        {"name": "add.1", "ts": 4000.0, "dur": 1000.0},
        {"name": "while.3", "ts": 0.0, "dur": 9000.0},
    ]  # a loop: not an operation
    out = common.op_breakdown(OP_PROFILE_HLO, events, steps=1)
    assert out["total_ms"] == 5.0 and out["busy_ms"] == 4.0


def test_depth_training_and_test_time_scaling_on_a_tiny_run(tmp_path):
    """The training-depth sweep on tiny settings (the control and one (T, n) point, a few steps on a
    small generated dataset), then the test-time scaling benchmark on the run it kept."""
    from benchmarks import depth_training, test_time_scaling  # noqa: PLC0415

    tiny = [
        "--config.data.generate.num_train=32",
        "--config.data.generate.num_test=8",
        "--config.data.generate.num_aug=0",
        "--config.train.eval_batch_size=8",
        "--config.optim.global_batch_size=8",
        "--config.model.halt_max_steps=3",
    ]
    assert (
        depth_training.main(
            [
                "--grid",
                "1x2",
                "--steps",
                "6",
                "--workdir",
                str(tmp_path / "runs"),
                "--out-dir",
                str(tmp_path),
                "--name",
                "tiny",
                *tiny,
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "depth_training_tiny.json").read_text())
    assert [(r["label"], r["effective_depth"], r["halt_max_steps"], r["steps"]) for r in report["runs"]] == [
        ("control", 2, 1, 6),
        ("T=1 n=2", 3, 3, 6),
    ]
    assert (tmp_path / "depth_training_tiny.png").stat().st_size > 0

    assert (
        test_time_scaling.main(
            [
                "--workdir",
                str(tmp_path / "runs" / "T1_n2"),
                "--trajectories",
                "1,3",
                "--noise",
                "0.5",
                "--halting",
                "fixed,adaptive",
                "--slots",
                "4",
                "--out-dir",
                str(tmp_path),
                "--name",
                "tiny",
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "test_time_scaling_tiny.json").read_text())
    rows = [(r["halting"], r["trajectories"], r["noise"]) for r in result["rows"]]
    assert rows == [(h, k, s) for h in ("fixed", "adaptive") for k, s in [(1, 0.0), (1, 0.5), (3, 0.5)]]
    fixed = {(r["trajectories"], r["noise"]): r for r in result["rows"] if r["halting"] == "fixed"}
    assert fixed[(1, 0.0)]["steps_per_puzzle"] == 3 and fixed[(3, 0.5)]["steps_per_puzzle"] == 9
    for row in result["rows"]:
        assert row["oracle_exact"] >= max(row["exact_qhalt"], row["exact_vote"])
    assert (tmp_path / "test_time_scaling_tiny.png").stat().st_size > 0
