"""``trm-jax plan`` (trm_jax.plan): memory plans compiled ahead of time for accelerators.

The TPU test needs libtpu (``pip install -e ".[tpu]"``; CI installs it) and the GPU test jax's
CUDA plugin (``pip install -e ".[cuda12]"``); each skips with the reason otherwise. The rest
runs anywhere: the local target, the searches on a synthetic memory model, the errors.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import jax
import pytest

from trm_jax import configs as configs_lib
from trm_jax.cli import main as cli_main
from trm_jax.plan import planner, targets
from trm_jax.plan.planner import make_plan
from trm_jax.plan.targets import PlanError, resolve_target
from trm_jax.train import memory_search as fit
from trm_jax.train import parallel, step_memory
from trm_jax.train.step_memory import GIB, StepMemory
from trm_test_utils import tiny_model_config, tiny_optim_config

HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None
HAS_CUDA_PLUGIN = importlib.util.find_spec("jax_plugins.xla_cuda12") is not None
needs_libtpu = pytest.mark.skipif(not HAS_LIBTPU, reason="libtpu is not installed (pip install -e '.[tpu]')")
needs_cuda_plugin = pytest.mark.skipif(
    not HAS_CUDA_PLUGIN, reason="jax's CUDA plugin is not installed (pip install -e '.[cuda12]')"
)

# The quickstart config shrunk further: compiles in seconds for any target.
TINY = {
    "model.hidden_size": 64,
    "model.num_heads": 2,
    "model.L_cycles": 2,
    "model.H_cycles": 2,
    "model.mlp_t": False,
    "model.pos_encodings": "rope",
    "optim.global_batch_size": 64,
    "train.eval_batch_size": 64,
    "model.forward_dtype": "bfloat16",
}


def tiny_config():
    return configs_lib.apply_overrides(configs_lib.load_config("quickstart"), dict(TINY))


def compiled_stats(plan):
    """XLA's memory analysis of the train step compiled directly (not through trm_jax.plan)."""
    mesh = parallel.make_mesh(list(plan.target.devices))
    state = parallel.abstract_state(plan.model_config, plan.optim_config, mesh)
    batch = parallel.abstract_batch(plan.model_config, plan.optim_config.global_batch_size, mesh)
    with step_memory.quiet_native_logs():
        step = parallel.jit_train_step(plan.model_config, plan.optim_config, mesh, state)
        return step.lower(state, batch).compile().memory_analysis()


def assert_plan_is_compiled_numbers(plan):
    with planner._compile_only(plan.target):
        stats = compiled_stats(plan)
    train = plan.train
    assert train.argument_bytes == stats.argument_size_in_bytes
    assert (train.output_bytes, train.aliased_bytes, train.temp_bytes) == (
        stats.output_size_in_bytes,
        stats.alias_size_in_bytes,
        stats.temp_size_in_bytes,
    )
    assert train.peak_bytes == (
        stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes + stats.temp_size_in_bytes
    )


def test_local_plan_is_the_compiled_step():
    """The local target (this CPU): the plan's figures are XLA's for the same step, the state
    is split as the run splits it (carry by rows), and the verdict needs no limit."""
    plan = make_plan(tiny_config(), resolve_target("local"), config_name="tiny", search=False)
    assert plan.target.platform == "cpu" and plan.budget_bytes is None
    assert plan.model_config.attention_impl == "xla"  # auto on a CPU
    assert_plan_is_compiled_numbers(plan)
    # No layout padding on a CPU: the shapes' bytes per device are XLA's argument buffers.
    assert plan.train.state_bytes + plan.train.batch_bytes == plan.train.argument_bytes
    assert plan.eval.peak_bytes > 0 and plan.verdict() == "fits as configured"
    text = "\n".join(plan.lines())
    assert "not a run on the hardware" in text and "train step:" in text and "eval step (64 rows" in text


@needs_libtpu
def test_tpu_plan_from_a_cpu(tmp_path):
    """A v5e-8 (2 hosts of 4 chips) from this CPU: the train step compiled for TPU with the
    Pallas flash-attention kernel (auto, bfloat16) inside shard_map; the plan's figures are the
    compiled ones; the CLI prints it with nothing on stderr and writes the JSON."""
    target = resolve_target("v5e:2x4")
    assert target.num_devices == 8 and target.platform == "tpu" and target.memory_bytes == 16 * GIB
    out = tmp_path / "plan.json"
    args = [
        sys.executable,
        "-m",
        "trm_jax",
        "plan",
        "--config",
        "quickstart",
        "--target",
        "v5e:2x4",
        "--no-search",
        "--json",
        str(out),
    ] + [f"--config.{k}={v}" for k, v in TINY.items()]
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=600, env=dict(os.environ, JAX_PLATFORMS="cpu")
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr[-2000:]
    assert "verdict: fits as configured" in result.stdout
    report = json.loads(out.read_text())
    assert report["attention_impl"] == "pallas" and report["fits"] and report["train"]["rows_per_device"] == 8
    # The same plan made in this process: the figures are XLA's analysis of the same step.
    plan = make_plan(tiny_config(), target, config_name="tiny", search=False)
    assert plan.train.peak_bytes == report["train"]["peak_bytes"]
    assert_plan_is_compiled_numbers(plan)


@needs_libtpu
def test_tpu_batch_that_does_not_divide_is_one_line(capsys):
    code = cli_main(["plan", "--config", "quickstart", "--target", "v5e:2x4", "--batch", "100"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "expected a multiple of the 8 devices (on v5e:2x4)" in err[0], err


@needs_cuda_plugin
def test_gpu_plan_from_a_cpu():
    """4 x H100 described by trm_jax.plan.gpu_specs: the budget is JAX's allocator share."""
    target = resolve_target("h100:4")
    plan = make_plan(tiny_config(), target, config_name="tiny", search=False, memory_fraction=0.75)
    assert plan.budget_bytes == int(0.75 * target.memory_bytes) and plan.fits
    assert_plan_is_compiled_numbers(plan)


@pytest.mark.parametrize(
    "target, message",
    [
        ("v9z:2x2", "unknown accelerator 'v9z'"),
        ("v5e", "expected local, a TPU slice such as v5e:2x4"),
        ("v5e:two", "expected a chip shape such as 2x4"),
        ("h100:0", "expected a GPU count such as h100:4"),
    ],
)
def test_bad_target_is_one_line(target, message, capsys):
    code = cli_main(["plan", "--config", "arc1", "--target", target])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_missing_libtpu_or_plugin_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        targets.importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("libtpu", "jax_plugins.xla_cuda12") else real(name, *a),
    )
    with pytest.raises(PlanError, match=r"needs libtpu, which is not installed: pip install 'jax\[tpu\]=="):
        resolve_target("v5e:2x4")
    with pytest.raises(PlanError, match=r"needs jax's CUDA plugin, which is not installed"):
        resolve_target("a100:8")


def test_unknown_dataset_fields_are_one_line(capsys):
    code = cli_main(["plan", "--config", "quickstart", "--target", "local", "--config.data.generate.kind="])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "give --dataset DIR" in err[0], err


# ---------------------------------------------------------------- searches on a memory model


def linear_plan(fixed_gib: float, per_row_gib: float, devices: int):
    """A fake compile: peak = fixed + per_row x rows per chunk (remat: a quarter of it)."""
    calls = []

    def plan(model_config, optim_config):
        rows = optim_config.global_batch_size // devices // optim_config.microbatches
        per_row = per_row_gib / 4 if model_config.remat else per_row_gib
        calls.append((rows, optim_config.microbatches, model_config.remat))
        return StepMemory(rows, int(fixed_gib * GIB), 0, int(fixed_gib * GIB), 0, 0, int(per_row * rows * GIB), 0.0)

    return plan, calls


def test_fewest_microbatches_is_the_smallest_divisor_that_fits():
    plan, calls = linear_plan(2.0, 0.1, devices=4)  # 768 rows: 192 per device, 21.2 GiB at once
    found = fit.fewest_microbatches(
        plan, tiny_model_config(), tiny_optim_config(global_batch_size=768), 4, budget=int(8 * GIB)
    )
    assert found is not None and found[0] == 4  # 2 + 4.8 GiB; 3 chunks plan 8.4
    assert [c[1] for c in calls] == [1, 2, 3, 4]
    assert (
        fit.fewest_microbatches(
            plan, tiny_model_config(), tiny_optim_config(global_batch_size=768), 4, budget=int(1 * GIB)
        )
        is None
    )


def test_largest_rows_per_device_is_checked_by_a_compile():
    plan, calls = linear_plan(2.0, 0.1, devices=4)
    rows, memory = fit.largest_rows_per_device(
        plan, tiny_model_config(), tiny_optim_config(global_batch_size=768), 4, budget=int(10 * GIB)
    )
    assert rows == 80 and memory.peak_bytes <= 10 * GIB and (80, 1, False) in calls
    remat = fit.remat_memory(plan, tiny_model_config(), tiny_optim_config(global_batch_size=768))
    assert remat.temp_bytes == int(0.025 * 192 * GIB)


def test_plan_cli_prints_and_writes_json(tmp_path, capsys):
    out = tmp_path / "plan.json"
    code = cli_main(
        ["plan", "--config", "quickstart", "--target", "local", "--no-search", "--json", str(out)]
        + [f"--config.{k}={v}" for k, v in TINY.items()]
    )
    printed = capsys.readouterr().out
    assert code == 0 and "plan of quickstart on local" in printed and "verdict: fits as configured" in printed
    report = json.loads(out.read_text())
    assert report["devices"] == jax.device_count() and report["microbatches"] == "auto"
    assert report["train"]["peak_bytes"] > report["train"]["argument_bytes"] > 0
