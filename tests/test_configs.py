"""Config files, overrides and their errors (trm_jax.configs, trm_jax/experiments/*.py)."""

from __future__ import annotations

import dataclasses
import json

import jax
import ml_collections
import pytest

from trm_jax import configs as configs_lib
from trm_jax.config import ConfigError, TRMConfig
from trm_jax.model.network import init_variables
from trm_jax.train.state import OptimConfig, create_train_state

PAPER = ("sudoku_mlp", "sudoku_att", "maze", "arc1", "arc2")
ALL = PAPER + ("quickstart",)
# (seq_len, vocab_size, num_puzzle_identifiers) of each experiment's dataset, as the builders write them.
DATASET = {
    "sudoku_mlp": (81, 11, 1),
    "sudoku_att": (81, 11, 1),
    "maze": (900, 6, 1),
    "arc1": (900, 12, 1000),
    "arc2": (900, 12, 1000),
    "quickstart": (81, 11, 1),
}


@dataclasses.dataclass
class FakeMetadata:
    seq_len: int
    vocab_size: int
    num_puzzle_identifiers: int


def test_every_config_file_is_found():
    assert set(ALL) <= set(configs_lib.config_names())


def test_config_by_name_by_path_and_by_legacy_path(tmp_path, monkeypatch):
    by_name = configs_lib.config_to_dict(configs_lib.load_config("quickstart"))
    packaged = configs_lib.CONFIGS_DIR / "quickstart.py"
    assert configs_lib.config_to_dict(configs_lib.load_config(str(packaged))) == by_name
    # configs/x.py, the configs' place before they moved into the package, from any directory.
    monkeypatch.chdir(tmp_path)
    assert configs_lib.config_to_dict(configs_lib.load_config("configs/quickstart.py")) == by_name
    # ... unless such a file exists there: a path always means that file.
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "quickstart.py").write_text(
        "from trm_jax.configs import base_config\n"
        "def get_config():\n    c = base_config()\n    c.train.seed = 123\n    return c\n"
    )
    assert configs_lib.load_config("configs/quickstart.py").train.seed == 123


@pytest.mark.parametrize("name", ALL)
def test_config_converts_and_model_initialises(name):
    config = configs_lib.load_config(name)
    # Every TRMConfig / OptimConfig field is declared (nothing is read through .get()).
    assert set(config.model.keys()) == {f.name for f in dataclasses.fields(TRMConfig)}
    assert set(config.optim.keys()) == {f.name for f in dataclasses.fields(OptimConfig)}
    model = configs_lib.model_config(config, FakeMetadata(*DATASET[name]))
    optim = configs_lib.optim_config(config, total_steps=1000)
    assert model.batch_size == optim.global_batch_size
    variables = jax.eval_shape(lambda k: init_variables(model, k), jax.random.key(0))
    assert variables["params"]
    state = jax.eval_shape(lambda k: create_train_state(model, optim, k), jax.random.key(0))
    assert state.carry.z_H.shape == (optim.global_batch_size, model.total_len, model.hidden_size)
    json.dumps(configs_lib.config_to_dict(config))  # the run directory stores it as JSON


def test_paper_hyperparameters():
    mlp, att, maze, arc1, arc2 = (configs_lib.load_config(n) for n in PAPER)
    assert mlp.model.mlp_t and mlp.model.pos_encodings == "none" and not att.model.mlp_t
    for c in (mlp, att):
        assert (c.model.H_cycles, c.model.L_cycles, c.model.L_layers) == (3, 6, 2)
    for c in (maze, arc1, arc2):
        assert (c.model.H_cycles, c.model.L_cycles, c.model.L_layers) == (3, 4, 2)
    for c in (mlp, att, maze):
        assert (c.train.epochs, c.train.eval_interval) == (50_000, 5_000)
        assert (c.optim.lr, c.optim.puzzle_emb_lr, c.optim.weight_decay) == (1e-4, 1e-4, 1.0)
    for c in (arc1, arc2):
        assert (c.train.epochs, c.train.eval_interval) == (100_000, 10_000)
        assert (c.optim.lr, c.optim.puzzle_emb_lr, c.optim.weight_decay) == (1e-4, 1e-2, 0.1)
        assert c.data.evaluator == "arc"
    for c in (mlp, att, maze, arc1, arc2):
        assert c.optim.ema and c.optim.ema_rate == 0.999 and c.optim.global_batch_size == 768
        assert c.model.hidden_size == 512 and c.model.halt_max_steps == 16
        assert c.model.puzzle_emb_ndim == 512 and c.model.puzzle_emb_len == 16


def test_overrides_take_the_field_type():
    config = configs_lib.load_config(
        "configs/quickstart.py",
        [
            "--config.optim.lr=3e-4",
            "--config.train.seed=7",
            "--config.model.mlp_t=false",
            "--config.model.expansion=2",
            "--config.data.generate.kind=maze",
        ],
    )
    assert config.optim.lr == 3e-4 and config.train.seed == 7 and config.model.mlp_t is False
    assert config.model.expansion == 2.0 and isinstance(config.model.expansion, float)
    assert config.data.generate.kind == "maze"


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.model.bogus=1", "unknown config key config.model.bogus"),
        ("--config.nothere.x=1", "unknown config key config.nothere"),
        ("--config.train.seed=abc", "expected an integer"),
        ("--config.model.mlp_t=maybe", "expected true or false"),
        ("--config.model=1", "is a section"),
        ("--config.train.seed", "expected --config.key=value"),
    ],
)
def test_bad_overrides_are_one_line_errors(override, message):
    with pytest.raises(configs_lib.ConfigLoadError, match=message) as info:
        configs_lib.load_config("quickstart", [override])
    assert "\n" not in str(info.value)


def test_missing_config_file_and_name():
    with pytest.raises(configs_lib.ConfigLoadError, match="does not exist"):
        configs_lib.load_config("configs/nope.py")
    with pytest.raises(configs_lib.ConfigLoadError, match="no config named 'nope'.*quickstart"):
        configs_lib.load_config("nope")


def test_config_file_with_unknown_key_is_rejected(tmp_path):
    path = tmp_path / "extra.py"
    path.write_text(
        "from trm_jax.configs import base_config\n"
        "def get_config():\n    c = base_config()\n    c.train.typo_field = 1\n    return c\n"
    )
    with pytest.raises(configs_lib.ConfigLoadError, match="unknown config key config.train.typo_field"):
        configs_lib.load_config(str(path))


def test_dataset_fields_must_match_the_dataset():
    config = configs_lib.load_config("sudoku_mlp", ["--config.model.seq_len=80"])
    with pytest.raises(ConfigError, match="seq_len=80 but the dataset has seq_len=81"):
        configs_lib.model_config(config, FakeMetadata(81, 11, 1))
    with pytest.raises(ConfigError, match="unknown: give a dataset"):
        configs_lib.model_config(configs_lib.load_config("sudoku_mlp"))


def test_json_round_trip(tmp_path):
    config = configs_lib.load_config("arc1")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(configs_lib.config_to_dict(config)))
    again = configs_lib.config_from_json(path)
    assert isinstance(again, ml_collections.ConfigDict)
    assert configs_lib.config_to_dict(again) == configs_lib.config_to_dict(config)


def test_run_config_from_before_a_new_field_still_loads(tmp_path):
    values = configs_lib.config_to_dict(configs_lib.load_config("quickstart"))
    del values["model"]["attention_impl"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(values))
    assert configs_lib.config_from_json(path).model.attention_impl == "auto"
    values["train"]["typo"] = 1
    path.write_text(json.dumps(values))
    with pytest.raises(configs_lib.ConfigLoadError, match="unknown config key config.train.typo"):
        configs_lib.config_from_json(path)


def test_every_config_named_in_the_docs_exists():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    for doc in ("README.md", "colab/README.md"):
        for line in (root / doc).read_text().splitlines():
            if "benchmarks" in line:  # the benchmark scripts have their own --config names
                continue
            for name in re.findall(r"--config[ =]([A-Za-z0-9_./]+)", line):
                configs_lib.resolve_config_path(name)
    table = (root / "docs" / "training.md").read_text().split("## The paper experiments", 1)[1]
    assert all(f"| `{name}` |" in table for name in ALL)


def test_top_level_configs_directory_mirrors_the_packaged_configs():
    """``configs/x.py`` in a checkout (the documented layout) loads the packaged ``x``, for every x."""
    top = configs_lib.CONFIGS_DIR.parent.parent / "configs"
    if not top.is_dir():
        pytest.skip("not a checkout (installed package): no top-level configs/")
    assert sorted(p.stem for p in top.glob("*.py")) == sorted(configs_lib.config_names())
    for name in configs_lib.config_names():
        from_file = configs_lib.load_config(str(top / f"{name}.py"))
        assert configs_lib.config_to_dict(from_file) == configs_lib.config_to_dict(configs_lib.load_config(name))
