"""The start-up memory check of a run (trm_jax.train.memory_check), on CPU with an injected
budget (``train.device_memory_gib``): a CPU reports no memory limit of its own.

The budgets are set from the step's own plan (compiled here first), so the tests do not
depend on how much memory XLA:CPU plans on a given machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trm_jax import configs as configs_lib
from trm_jax.cli import main as cli_main
from trm_jax.data.generate_sudoku import generate_sudoku_csvs
from trm_jax.data.sudoku import build_sudoku_dataset
from trm_jax.train import loop, memory_check, parallel
from trm_jax.train.step_memory import GIB, train_step_memory
from trm_test_utils import tiny_run_config

# Rows per device large enough that activations dominate the plan (the state is a few MiB).
BATCH = 32


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """32 generated training puzzles: an epoch fills one batch of 32."""
    root = tmp_path_factory.mktemp("memory_check")
    csvs = generate_sudoku_csvs(root / "csv", num_train=BATCH, num_test=4, blanks=45)
    return build_sudoku_dataset(root / "sudoku", source_dir=csvs, hub_repo=None, seed=0)


def run_config(dataset: Path, **overrides):
    values = {
        "optim.global_batch_size": BATCH,
        "train.eval_batch_size": BATCH,
        "optim.total_steps": 2,
        "train.eval_every_steps": 2,
        "model.hidden_size": 64,
        "model.L_cycles": 2,
        **overrides,
    }
    return tiny_run_config(dataset, **values)


def planned_gib(config, microbatches: int = 1) -> float:
    """The peak of the run's train step with ``microbatches`` chunks, as the check compiles it."""
    from trm_jax.data.format import read_metadata  # noqa: PLC0415

    model_config = configs_lib.model_config(config, read_metadata(Path(config.data.dataset_dir) / "train"))
    optim_config = configs_lib.optim_config(config, total_steps=2).replace(microbatches=microbatches)
    return train_step_memory(model_config, optim_config, parallel.make_mesh(), "cpu").peak_bytes / GIB


def test_no_limit_no_check():
    """A CPU reports no memory limit: nothing is compiled ahead, auto means 1 microbatch."""
    config = configs_lib.load_config("quickstart")
    assert memory_check.memory_budget(config) is None
    assert configs_lib.auto_microbatches(config)
    fitted = memory_check.fit_train_step(config, None, configs_lib.optim_config(config, 10), None, None)
    assert fitted.optim_config.microbatches == 1 and fitted.compiled is None


def test_auto_is_a_word_for_zero_on_the_command_line():
    config = configs_lib.load_config("arc1", ["--config.optim.microbatches=4"])
    assert config.optim.microbatches == 4 and not configs_lib.auto_microbatches(config)
    config = configs_lib.load_config("arc1", ["--config.optim.microbatches=auto"])
    assert config.optim.microbatches == configs_lib.AUTO_MICROBATCHES and configs_lib.auto_microbatches(config)
    with pytest.raises(configs_lib.ConfigLoadError, match="config.optim.microbatches: expected an integer or auto"):
        configs_lib.load_config("arc1", ["--config.optim.microbatches=many"])


def test_impossible_plan_is_refused_with_one_line(dataset, tmp_path, capsys, monkeypatch):
    """A budget below the smallest plan (every microbatch count tried and remat): exit 2, one
    ``error:`` line that says what the step needs, and nothing written in the run directory."""
    monkeypatch.setattr(memory_check.fit, "MAX_MICROBATCH_TRIALS", 2)  # 1 and 2 chunks: enough to refuse
    config = run_config(dataset, **{"optim.microbatches": 1})
    tiny = planned_gib(config) / 1000
    workdir = tmp_path / "run"
    code = cli_main(
        ["train", "--config", "quickstart", "--workdir", str(workdir)]
        + [f"--config.{k}={v}" for k, v in _overrides(config, device_memory_gib=tiny).items()]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: the train step plans ") and "train.device_memory_gib" in err[0]
    assert "no microbatch count tried or remat fits" in err[0]
    assert not workdir.exists() or not any(workdir.iterdir())


def test_refusal_names_the_settings_that_fit(dataset, tmp_path):
    """Between the 4-chunk plan and the whole-batch plan: refused, naming 4 microbatches (or
    fewer) and remat, with the memory each plans."""
    config = run_config(dataset, **{"optim.microbatches": 1})
    whole, quarter = planned_gib(config), planned_gib(config, 4)
    assert quarter < 0.8 * whole, (quarter, whole)
    config.train.device_memory_gib = (quarter + whole) / 2
    with pytest.raises(memory_check.MemoryPlanError) as info:
        loop.train(config, tmp_path / "run")
    message = str(info.value)
    assert "\n" not in message
    assert "--config.optim.microbatches=" in message and "--config.optim.microbatches=auto" in message
    count = int(message.split("--config.optim.microbatches=")[1].split(" ")[0])
    assert 1 < count <= 4
    assert not (tmp_path / "run" / loop.CONFIG_NAME).exists()


def test_auto_microbatches_chooses_the_fewest_that_fit_and_trains(dataset, tmp_path, capsys):
    """optim.microbatches=auto under the same budget: the run picks a count, says so in one
    line, trains with the step compiled by the check and stores auto (0) in its config."""
    config = run_config(dataset)
    assert configs_lib.auto_microbatches(config)
    whole, quarter = planned_gib(config), planned_gib(config, 4)
    config.train.device_memory_gib = (quarter + whole) / 2
    result = loop.train(config, tmp_path / "run")
    assert result.step == 2 and not result.interrupted
    out = capsys.readouterr().out
    chosen = [line for line in out.splitlines() if line.startswith("optim.microbatches=auto: ")]
    assert len(chosen) == 1, out
    count = int(chosen[0].split(": ")[1].split(" ")[0])
    assert 1 < count <= 4
    assert f"per device in {count} microbatches" in out
    stored = json.loads((tmp_path / "run" / loop.CONFIG_NAME).read_text())
    assert stored["optim"]["microbatches"] == configs_lib.AUTO_MICROBATCHES


def test_a_plan_that_fits_runs_the_compiled_step(dataset, tmp_path, monkeypatch):
    """Within the budget: one compile (the check's), reused for every step."""
    config = run_config(dataset, **{"optim.microbatches": 1})
    config.train.device_memory_gib = 2 * planned_gib(config)
    compiles = []
    real = memory_check.compile_train_step
    monkeypatch.setattr(
        memory_check, "compile_train_step", lambda *args, **kwargs: compiles.append(1) or real(*args, **kwargs)
    )
    result = loop.train(config, tmp_path / "run")
    assert result.step == 2 and len(compiles) == 1


def _overrides(config, **train) -> dict:
    """Command-line overrides that turn the quickstart config into ``config`` (its train section
    updated by ``train``)."""
    base = configs_lib.config_to_dict(configs_lib.load_config("quickstart"))
    want = configs_lib.config_to_dict(config)
    want["train"].update(train)
    out = {}
    for section, values in want.items():
        for key, value in values.items():
            if isinstance(value, dict):
                out.update({f"{section}.{key}.{k}": v for k, v in value.items() if base[section][key][k] != v})
            elif base[section][key] != value:
                out[f"{section}.{key}"] = value
    return out


def test_out_of_memory_at_run_time_is_one_line(monkeypatch, tmp_path, capsys):
    """Should the device still run out of memory (e.g. fragmentation the plan cannot see),
    XLA's error becomes one line with what to try, exit status 1."""

    def exhausted(*args, **kwargs):
        raise RuntimeError(
            "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 2147483648 bytes.\n"
            "BufferAssignment OOM Debugging.\nmore lines"
        )

    monkeypatch.setattr(loop, "train", exhausted)
    code = cli_main(["train", "--config", "quickstart", "--workdir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("error: the device ran out of memory (RESOURCE_EXHAUSTED: Out of memory")
    assert "--config.optim.microbatches=auto" in err[0] and "trm-jax plan" in err[0]
