"""Experiment configs: the shared defaults, loading a config file, validation.

A config is an ``ml_collections.ConfigDict`` with four sections: ``model`` (every
:class:`~trm_jax.config.TRMConfig` field), ``optim`` (every
:class:`~trm_jax.config.OptimConfig` field), ``data`` and ``train``. The experiment configs
ship inside the package (``trm_jax/experiments/``, so a non-editable ``pip install`` has them)
and define ``get_config()`` (big_vision style); they start from :func:`base_config` and change
what their experiment changes.

:func:`load_config` accepts a bare name (``sudoku_mlp``) or a path to any config file
(``my_configs/x.py``) and applies ``--config.a.b=value`` overrides (:mod:`trm_jax.config_overrides`,
through ml_collections' own parser). An unknown key, a value of the wrong type or a missing
file raises :class:`ConfigLoadError` with a one-line message.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import ml_collections

from trm_jax.config import ConfigError, OptimConfig, TRMConfig
from trm_jax.config_overrides import OVERRIDE_PREFIX, ConfigLoadError, apply_overrides  # noqa: F401 - re-exported
from trm_jax.fileio import read_json

CONFIGS_DIR = Path(__file__).resolve().parent / "experiments"
# Where the configs lived before they moved into the package: ``configs/x.py`` (as older
# commands and scripts name them) still selects the packaged ``x`` when no such file exists.
_LEGACY_DIR = "configs"
DATASET_FIELDS = ("seq_len", "vocab_size", "num_puzzle_identifiers")


# Where the experiments' defaults differ from the dataclasses' (which follow the official
# model config and cfg_pretrain.yaml). Each is the paper's setting or a "derive it" marker.
MODEL_DEFAULTS: dict[str, Any] = {
    # 0: read from the dataset's metadata (a non-zero value must match it).
    "seq_len": 0,
    "vocab_size": 0,
    "num_puzzle_identifiers": 0,
    # The paper's models learn a 512-wide embedding per puzzle (the official config sets
    # puzzle_emb_ndim to hidden_size), in puzzle_emb_len=16 prefix positions.
    "puzzle_emb_ndim": 512,
}
OPTIM_DEFAULTS: dict[str, Any] = {
    # 0: epochs * total_groups * mean_puzzle_examples / global_batch_size, as the reference
    # computes it from the dataset.
    "total_steps": 0,
    # 0 ("auto" on the command line): the fewest microbatches whose train step fits the
    # device's memory, chosen at start-up from the compiled step's memory plan (1 where no
    # memory limit is known, e.g. on a CPU). See trm_jax.train.memory_check.
    "microbatches": 0,
}
AUTO_MICROBATCHES = 0


def _section(cls: type, overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """Every field of the dataclass ``cls`` with its default, ``overrides`` replacing some."""
    values = {}
    for field in dataclasses.fields(cls):
        if field.name in overrides:
            values[field.name] = overrides[field.name]
        elif field.default is not dataclasses.MISSING:
            values[field.name] = field.default
        else:
            raise TypeError(f"{cls.__name__}.{field.name} has no default: give one in base_config")
    return ml_collections.ConfigDict(values)


def base_config() -> ml_collections.ConfigDict:
    """Every key the trainer reads, with the reference's defaults (ARC-style optimiser).

    ``model`` and ``optim`` hold every :class:`TRMConfig` / :class:`OptimConfig` field with the
    dataclass default except those in :data:`MODEL_DEFAULTS` / :data:`OPTIM_DEFAULTS`.
    ``model.batch_size`` is informational: the trainer sets it to ``optim.global_batch_size``.
    """
    c = ml_collections.ConfigDict()
    c.model = _section(TRMConfig, MODEL_DEFAULTS)
    c.optim = _section(OptimConfig, OPTIM_DEFAULTS)

    c.data = ml_collections.ConfigDict(
        dict(
            dataset_dir="",  # a directory written by `trm-jax data ...`
            evaluator="",  # "arc": ARC pass@k and submission.json at every evaluation
            # Built into `dataset_dir` (or WORKDIR/data when empty) if missing; kind "" = never.
            generate=ml_collections.ConfigDict(
                dict(
                    # workers > 1: generator processes (spawned; the output does not depend on their
                    # number). A script that calls train() needs Python's `if __name__ == "__main__":`.
                    kind="",
                    num_train=0,
                    num_test=0,
                    num_aug=0,
                    seed=0,
                    workers=1,
                    # Sudoku difficulty: exactly this many blank cells per puzzle (0: minimal
                    # puzzles that need search, the hardest the generator makes).
                    blanks=0,
                )
            ),
        )
    )

    c.train = ml_collections.ConfigDict(
        dict(
            epochs=100_000,
            eval_interval=10_000,  # epochs between evaluations (0: only at the end)
            min_eval_interval=0,  # evaluations before this many intervals are skipped
            eval_every_steps=0,  # > 0 overrides eval_interval with a step count
            checkpoint_every_eval=True,  # else only at the end (and on SIGINT/SIGTERM)
            max_to_keep=3,
            async_checkpoint=True,
            seed=0,
            log_every=50,  # steps between stdout/TensorBoard lines (averages over them)
            eval_batch_size=0,  # 0: optim.global_batch_size
            eval_max_batches=0,  # 0: the whole test split
            eval_num_steps=0,  # ACT steps at evaluation (adaptive: the cap); 0: model.halt_max_steps
            # "fixed": every puzzle runs eval_num_steps steps (the official evaluation). "adaptive":
            # a puzzle stops when sigmoid(q_halt) > eval_halt_threshold, its slot then takes the next
            # puzzle (continuous batching over eval_slots rows; 0: the eval batch size). One process.
            eval_halting="fixed",
            eval_halt_threshold=0.5,
            eval_slots=0,
            # > 0: when the run finishes, exact accuracy on the test split after 1, 2, 4, ... up to
            # this many test-time supervision steps, and the learned halting point
            # (WORKDIR/depth_curve.{json,png}; see trm_jax.train.depth_curve). 0: not computed.
            depth_curve_steps=0,
            parallel="jit",  # "jit" (sharded over all devices) or "pmap"
            distributed=False,  # call jax.distributed.initialize() (multi-host)
            # Multi-process: steps between checks for SIGINT/SIGTERM on any process (a tiny
            # all-reduce read one step later, so all stop at one step: a check's step + 1).
            # 1 adds no host stall; raise it for very short steps. Unused by a single process.
            stop_check_every=1,
            progress_bar=True,
            tensorboard=True,  # also write WORKDIR/tensorboard/ when tensorboardX is installed
            # Weights & Biases project ("": off): process 0 logs every scalar of metrics.csv to a W&B
            # run, resumed with the run (pip install 'trm-jax[wandb]'; see trm_jax.train.wandb_log).
            wandb_project="",
            wandb_entity="",  # the W&B user or team ("": the account's default entity)
            wandb_run_name="",  # the W&B run's display name ("": the run directory's name)
            # Per-device memory (GiB) the train step may plan for, checked against XLA's memory plan
            # of the compiled step before the first step. 0: the limit the device's runtime reports
            # (GPU, TPU; a GPU's is XLA's preallocated share); no check where none is reported (CPU).
            device_memory_gib=0.0,
        )
    )
    return c


def config_names() -> list[str]:
    """The names of the packaged experiment configs (``quickstart``, ``sudoku_mlp``, ...)."""
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.py") if not p.stem.startswith("_"))


def resolve_config_path(name_or_path: str) -> Path:
    """A path to a config file as given, or a bare name looked up among the packaged configs.

    ``configs/x.py`` (the configs' directory before they moved into the package) selects the
    packaged ``x`` when no such file exists relative to the working directory.
    """
    path = Path(name_or_path)
    if path.suffix == ".py" or os.sep in name_or_path or "/" in name_or_path:
        if path.is_file():
            return path
        if path.parent == Path(_LEGACY_DIR) and (CONFIGS_DIR / path.name).is_file():
            return CONFIGS_DIR / path.name
        raise ConfigLoadError(f"config file {name_or_path} does not exist")
    candidate = CONFIGS_DIR / f"{name_or_path}.py"
    if not candidate.is_file():
        known = config_names()
        raise ConfigLoadError(f"no config named {name_or_path!r} (known: {', '.join(known) or 'none'})")
    return candidate


def load_config_file(name_or_path: str) -> ml_collections.ConfigDict:
    """Imports a config file and returns its ``get_config()``."""
    path = resolve_config_path(name_or_path)
    spec = importlib.util.spec_from_file_location(f"trm_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as err:  # a broken config file: report where
        raise ConfigLoadError(f"config file {path} failed to load: {type(err).__name__}: {err}") from err
    if not hasattr(module, "get_config"):
        raise ConfigLoadError(f"config file {path} defines no get_config()")
    config = module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigLoadError(f"{path}: get_config() returned {type(config).__name__}, expected a ConfigDict")
    return config


def load_config(name_or_path: str, overrides: Sequence[str] | Mapping[str, Any] = ()) -> ml_collections.ConfigDict:
    """A config file's ``get_config()`` with overrides applied and its sections checked."""
    config = apply_overrides(load_config_file(name_or_path), overrides)
    check_sections(config, str(name_or_path))
    return config


def check_sections(config: ml_collections.ConfigDict, where: str) -> None:
    """Every key the trainer reads is present and no unknown key is (compares with base_config)."""
    problems = _compare(base_config(), config, "config")
    if problems:
        raise ConfigLoadError(
            f"{where}: " + "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
        )


def _compare(expected: ml_collections.ConfigDict, got: Any, prefix: str) -> list[str]:
    if not isinstance(got, (ml_collections.ConfigDict, Mapping)):
        return [f"{prefix} should be a section"]
    problems = [f"unknown config key {prefix}.{k}" for k in got.keys() if k not in expected]
    for key, value in expected.items():
        if key not in got:
            problems.append(f"missing config key {prefix}.{key}")
        elif isinstance(value, ml_collections.ConfigDict):
            problems += _compare(value, got[key], f"{prefix}.{key}")
    return problems


def config_from_json(path: str | os.PathLike) -> ml_collections.ConfigDict:
    """A resolved config written by the trainer (``WORKDIR/config.json``)."""
    path = Path(path)
    values = read_json(path, ConfigLoadError, "the resolved config of a run directory")
    stored = ml_collections.ConfigDict(values)
    unknown = [p for p in _compare(base_config(), stored, "config") if p.startswith("unknown")]
    if unknown:
        raise ConfigLoadError(f"{path}: " + "; ".join(unknown[:3]))
    # Fields added to the project after the run was written take their defaults.
    config = base_config()
    config.update(stored)
    check_sections(config, str(path))
    return config


def config_to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Plain JSON-able nested dict of a config."""
    return json.loads(config.to_json())


def model_config(config: ml_collections.ConfigDict, metadata: Any = None) -> TRMConfig:
    """The :class:`TRMConfig` of ``config.model``, dataset fields filled from ``metadata``.

    ``metadata`` is anything with ``seq_len``, ``vocab_size`` and ``num_puzzle_identifiers``
    (a :class:`~trm_jax.data.format.DatasetMetadata`, a loader). A non-zero config value that
    differs from the dataset's is an error.
    """
    values = dict(config_to_dict(config.model))
    values["batch_size"] = int(config.optim.global_batch_size)
    for name in DATASET_FIELDS:
        if metadata is None:
            continue
        actual = int(getattr(metadata, name))
        if values[name] not in (0, actual):
            raise ConfigError(
                f"config.model.{name}={values[name]} but the dataset has {name}={actual} "
                f"(set it to 0 to take the dataset's value)"
            )
        values[name] = actual
    missing = [f"config.model.{n}" for n in DATASET_FIELDS if values[n] == 0]
    if missing:
        raise ConfigError(f"{', '.join(missing)} unknown: give a dataset or set them")
    return TRMConfig.from_dict(values)


_PARALLEL_MODES = ("jit", "pmap")
_EVALUATORS = ("", "arc")
_HALTING = ("fixed", "adaptive")
_GENERATORS = ("", "sudoku", "maze")


def validate_config(config: ml_collections.ConfigDict, device_count: int | None = None) -> None:
    """Checks every value that can be checked without the dataset; raises :class:`ConfigError`.

    Run before any data is generated or any file written. The message is one line naming
    ``config.section.field`` and what was expected. The model section is checked by building a
    :class:`TRMConfig` with placeholder dataset fields (where they are 0), the optim section by
    an :class:`~trm_jax.config.OptimConfig` with a placeholder ``total_steps`` (where it is
    0); ``optim.global_batch_size`` must divide evenly over ``device_count`` devices (default:
    ``jax.device_count()``).
    """

    def need(ok: bool, key: str, expected: str) -> None:
        if not ok:
            section, field = key.split(".")
            raise ConfigError(f"config.{key}={config[section][field]!r}: expected {expected}")

    def integer(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    need(
        integer(config.optim.total_steps) and config.optim.total_steps >= 0,
        "optim.total_steps",
        "an integer >= 0 (0: derived from the dataset and train.epochs)",
    )
    need(
        integer(config.optim.microbatches) and config.optim.microbatches >= 0,
        "optim.microbatches",
        "a positive integer, or auto (0): the fewest that fit the device's memory",
    )
    need(
        isinstance(config.train.device_memory_gib, (int, float)) and config.train.device_memory_gib >= 0,
        "train.device_memory_gib",
        "a number of GiB >= 0 (0: the device's own limit)",
    )
    for name in DATASET_FIELDS:
        need(
            integer(config.model[name]) and config.model[name] >= 0,
            f"model.{name}",
            "an integer >= 0 (0: read from the dataset)",
        )
    for section, build in (
        ("model", lambda: model_config(_with_placeholders(config))),
        ("optim", lambda: optim_config(config, total_steps=1)),
    ):
        try:
            build()
        except ConfigError as err:
            raise ConfigError(
                str(err).replace("TRMConfig.", "config.model.").replace("OptimConfig.", "config.optim.")
            ) from None
        except (TypeError, ValueError) as err:  # a value of the wrong type in a dataclass check
            raise ConfigError(f"config.{section}: {err}") from None

    train, data, gen = config.train, config.data, config.data.generate
    need(train.parallel in _PARALLEL_MODES, "train.parallel", f"one of {_PARALLEL_MODES}")
    need(data.evaluator in _EVALUATORS, "data.evaluator", f"one of {_EVALUATORS}")
    need(train.eval_halting in _HALTING, "train.eval_halting", f"one of {_HALTING}")
    need(
        isinstance(train.eval_halt_threshold, (int, float)) and 0 < train.eval_halt_threshold <= 1,
        "train.eval_halt_threshold",
        "a probability in (0, 1]",
    )
    for name in ("epochs", "log_every", "max_to_keep", "stop_check_every"):
        need(integer(train[name]) and train[name] >= 1, f"train.{name}", "a positive integer")
    for name in (
        "eval_interval",
        "min_eval_interval",
        "eval_every_steps",
        "eval_batch_size",
        "eval_max_batches",
        "eval_num_steps",
        "depth_curve_steps",
        "eval_slots",
    ):
        need(integer(train[name]) and train[name] >= 0, f"train.{name}", "an integer >= 0")
    need(isinstance(data.dataset_dir, str), "data.dataset_dir", "a path (a string)")
    for name in ("wandb_project", "wandb_entity", "wandb_run_name"):
        need(isinstance(train[name], str), f"train.{name}", "a string")
    if gen.kind not in _GENERATORS:
        raise ConfigError(f"config.data.generate.kind={gen.kind!r}: expected one of {_GENERATORS}")
    if gen.kind:
        for name in ("num_train", "num_test", "workers"):
            if not (integer(gen[name]) and gen[name] >= 1):
                raise ConfigError(
                    f"config.data.generate.{name}={gen[name]!r}: expected a positive "
                    f"integer (data.generate.kind={gen.kind!r} builds the dataset)"
                )
        if not (integer(gen.num_aug) and gen.num_aug >= 0):
            raise ConfigError(f"config.data.generate.num_aug={gen.num_aug!r}: expected an integer >= 0")
        if not (integer(gen.blanks) and 0 <= gen.blanks <= 64):
            raise ConfigError(f"config.data.generate.blanks={gen.blanks!r}: expected an integer in 0..64")
        if gen.blanks and gen.kind != "sudoku":
            raise ConfigError(
                f"config.data.generate.blanks={gen.blanks!r}: only the Sudoku generator has "
                f"a blanks setting (data.generate.kind={gen.kind!r})"
            )

    if device_count is None:
        import jax  # noqa: PLC0415 - keeps this module light

        device_count = jax.device_count()
    batch = config.optim.global_batch_size
    need(batch % device_count == 0, "optim.global_batch_size", f"a multiple of the {device_count} devices")
    eval_batch = train.eval_batch_size
    need(
        eval_batch == 0 or eval_batch % device_count == 0,
        "train.eval_batch_size",
        f"0 or a multiple of the {device_count} devices",
    )
    need(train.eval_slots % device_count == 0, "train.eval_slots", f"0 or a multiple of the {device_count} devices")


def _with_placeholders(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of ``config`` whose zero dataset fields (read from the dataset later) are 1."""
    copy = ml_collections.ConfigDict(config_to_dict(config))
    for name in DATASET_FIELDS:
        if copy.model[name] == 0:
            copy.model[name] = 1
    return copy


def optim_config(
    config: ml_collections.ConfigDict, total_steps: int | None = None, microbatches: int | None = None
) -> OptimConfig:
    """The :class:`OptimConfig` of ``config.optim``; ``total_steps`` replaces a 0 there, and
    ``microbatches`` an automatic count (:data:`AUTO_MICROBATCHES`, which is 1 otherwise: the
    run's start-up chooses it, :mod:`trm_jax.train.memory_check`)."""
    values = config_to_dict(config.optim)
    if values["total_steps"] == 0:
        if total_steps is None:
            raise ConfigError("config.optim.total_steps is 0 (derived from the dataset): give total_steps")
        values["total_steps"] = int(total_steps)
    if values["microbatches"] == AUTO_MICROBATCHES:
        values["microbatches"] = microbatches or 1
    return OptimConfig.from_dict(values)


def auto_microbatches(config: ml_collections.ConfigDict) -> bool:
    """Whether the run chooses ``optim.microbatches`` from the device's memory at start-up."""
    return config.optim.microbatches == AUTO_MICROBATCHES
