"""A run's memory plan on a target, before renting it: ``trm-jax plan``.

:func:`make_plan` compiles the run's sharded train step and its eval step ahead of time for
the target's devices (:mod:`trm_jax.plan.targets`), compares each device's peak with its
memory and, when the configured step does not fit (or fits with room), finds what does:
the fewest ``optim.microbatches``, remat of the differentiated cycle, the largest batch per
device (:mod:`trm_jax.train.memory_search`). Everything is XLA's plan of the compiled program; nothing
runs on the hardware.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from typing import Any, Iterator

import jax
import ml_collections

from trm_jax import configs as configs_lib
from trm_jax.config import ConfigError, OptimConfig, TRMConfig
from trm_jax.plan.shapes import DatasetShape, dataset_shape
from trm_jax.plan.targets import PlanError, Target, first_line
from trm_jax.train import attention_check, parallel
from trm_jax.train import memory_search as fit
from trm_jax.train.step_memory import GIB, StepMemory, eval_step_memory, train_step_memory

# JAX's GPU allocator takes this share of the memory unless XLA_PYTHON_CLIENT_MEM_FRACTION says.
DEFAULT_GPU_MEMORY_FRACTION = 0.75


@dataclasses.dataclass
class Plan:
    """What :func:`make_plan` found (memory per device, in bytes)."""

    config_name: str
    target: Target
    budget_bytes: int | None
    dataset: DatasetShape
    model_config: TRMConfig
    optim_config: OptimConfig  # as planned (microbatches: the configured count; 1 for auto)
    auto_microbatches: bool
    train: StepMemory
    eval: StepMemory
    eval_batch: int
    notes: list[str] = dataclasses.field(default_factory=list)
    microbatches: tuple[int, StepMemory] | None = None  # the fewest that fit, when 1 does not
    remat: StepMemory | None = None
    largest_rows: tuple[int, StepMemory] | None = None  # with the configured settings

    @property
    def fits(self) -> bool:
        return self.train.fits(self.budget_bytes)

    def verdict(self) -> str:
        """One line: whether the run fits as configured, and if not, with which settings."""
        if self.fits and self.eval.fits(self.budget_bytes):
            return "fits as configured"
        if not self.train.fits(self.budget_bytes):
            options = []
            if self.microbatches is not None:
                count = self.microbatches[0]
                if self.auto_microbatches:
                    return f"fits: optim.microbatches=auto chooses {count} at start-up"
                options.append(f"--config.optim.microbatches={count}")
            if self.remat is not None and self.remat.fits(self.budget_bytes):
                options.append("--config.model.remat=true")
            return (
                "does not fit as configured; fits with " + " or ".join(options)
                if options
                else "does not fit: more devices or a smaller batch"
            )
        return "the train step fits; the eval step does not: set a smaller --config.train.eval_batch_size"

    def lines(self) -> list[str]:
        """The report ``trm-jax plan`` prints."""
        m, t = self.model_config, self.target
        budget = f"{self.budget_bytes / GIB:.1f} GiB" if self.budget_bytes else "no limit"
        block = "mlp_t" if m.mlp_t else f"attention ({m.attention_impl})"
        rows = self.optim_config.global_batch_size // t.num_devices
        chunks = "auto" if self.auto_microbatches else str(self.optim_config.microbatches)
        out = [
            f"plan of {self.config_name} on {t.describe()}; budget {budget} per device",
            "  XLA's memory plan of the compiled steps, not a run on the hardware",
            f"dataset: {self.dataset.source}: seq_len {self.dataset.seq_len}, vocab {self.dataset.vocab_size}, "
            f"{self.dataset.num_puzzle_identifiers:,} puzzle ids",
            f"model: {m.hidden_size} wide, {block}, T={m.H_cycles} n={m.L_cycles}, {m.forward_dtype}, "
            f"saved_activations={'remat' if m.remat else m.saved_activations}",
            f"batch {self.optim_config.global_batch_size} ({rows} per device), optim.microbatches={chunks}",
            f"train step: {self._row(self.train)}",
        ]
        if self.microbatches is not None:
            count, memory = self.microbatches
            out.append(f"  with optim.microbatches={count}: {self._row(memory)}")
        if self.remat is not None:
            out.append(f"  with model.remat=true: {self._row(self.remat)}")
        if self.largest_rows is not None:
            count, memory = self.largest_rows
            out.append(
                f"  largest batch per device that fits as configured: {count} rows "
                f"(global {count * t.num_devices}): {self._row(memory)}"
            )
        out.append(f"eval step ({self.eval_batch} rows, {self._eval_steps()} ACT steps): {self._row(self.eval)}")
        out += [f"note: {note}" for note in self.notes]
        out.append(f"verdict: {self.verdict()}")
        return out

    def _eval_steps(self) -> int:
        return self.model_config.halt_max_steps

    def _row(self, memory: StepMemory) -> str:
        fits = "fits" if memory.fits(self.budget_bytes) else "does NOT fit"
        return f"{memory.summary()}: {fits}; compiled in {memory.compile_s:.1f} s" + (
            f" ({memory.note})" if memory.note else ""
        )

    def to_json(self) -> dict[str, Any]:
        def opt(pair):
            return None if pair is None else {"value": pair[0], "memory": pair[1].to_json()}

        return {
            "config": self.config_name,
            "target": self.target.name,
            "platform": self.target.platform,
            "device_kind": self.target.device_kind,
            "devices": self.target.num_devices,
            "hosts": self.target.hosts,
            "device_memory_bytes": self.target.memory_bytes,
            "budget_bytes": self.budget_bytes,
            "dataset": dataclasses.asdict(self.dataset),
            "attention_impl": self.model_config.attention_impl,
            "saved_activations": self.model_config.saved_activations,
            "remat_configured": self.model_config.remat,
            "global_batch_size": self.optim_config.global_batch_size,
            "microbatches": "auto" if self.auto_microbatches else self.optim_config.microbatches,
            "train": self.train.to_json(),
            "eval": self.eval.to_json(),
            "eval_batch": self.eval_batch,
            "fewest_microbatches": opt(self.microbatches),
            "remat": None if self.remat is None else self.remat.to_json(),
            "largest_rows_per_device": opt(self.largest_rows),
            "fits": self.fits,
            "verdict": self.verdict(),
            "notes": self.notes,
        }


def memory_budget(target: Target, memory_fraction: float | None = None) -> int | None:
    """Bytes per device a run may use: a TPU's HBM, a GPU's memory times JAX's allocator share
    (``memory_fraction``, else ``XLA_PYTHON_CLIENT_MEM_FRACTION``, else 0.75), the local
    devices' runtime limit."""
    if target.memory_bytes is None or target.platform != "gpu" or target.name == "local":
        return target.memory_bytes
    fraction = memory_fraction or float(os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", DEFAULT_GPU_MEMORY_FRACTION))
    return int(target.memory_bytes * fraction)


def make_plan(
    config: ml_collections.ConfigDict,
    target: Target,
    *,
    config_name: str = "",
    batch_size: int | None = None,
    dataset_dir: str | None = None,
    search: bool = True,
    largest_batch: bool = True,
    memory_fraction: float | None = None,
) -> Plan:
    """The memory plan of ``config``'s run on ``target`` (see the module docstring).

    ``batch_size`` replaces ``optim.global_batch_size``; ``search=False`` compiles the
    configured steps only; ``largest_batch=False`` skips the search for the largest batch per
    device (up to :data:`~trm_jax.train.memory_search.MAX_ROW_TRIALS` more compiles). Raises
    :class:`PlanError` (one line) when no plan can be made.
    """
    if batch_size is not None:
        config.optim.global_batch_size = batch_size
    shape = dataset_shape(config, dataset_dir)
    try:
        configs_lib.validate_config(config, device_count=target.num_devices)
        model_config = configs_lib.model_config(config, shape)
        optim_config = configs_lib.optim_config(config, total_steps=config.optim.total_steps or 1)
        parallel.check_batch_divisible(
            optim_config.global_batch_size, parallel.make_mesh(list(target.devices)), optim_config.microbatches
        )
    except (ConfigError, ValueError) as err:
        raise PlanError(f"{' '.join(str(err).split())} (on {target.name})") from None
    mesh = parallel.make_mesh(list(target.devices))
    budget = memory_budget(target, memory_fraction)
    notes = []
    if target.platform == "gpu" and target.name != "local":
        notes.append(
            f"GPU budget: {budget / GIB:.1f} of {target.memory_bytes / GIB:.1f} GiB, the share JAX's "
            f"allocator takes (XLA_PYTHON_CLIENT_MEM_FRACTION, default {DEFAULT_GPU_MEMORY_FRACTION})"
        )
    model_config, train = _train_with_attention(model_config, optim_config, mesh, target, notes)
    plan_fn = _planner(mesh, target)
    eval_batch = config.train.eval_batch_size or optim_config.global_batch_size
    with _compile_only(target):
        evaluation = eval_step_memory(
            model_config, optim_config, mesh, target.platform, eval_batch, num_steps=config.train.eval_num_steps or None
        )
    plan = Plan(
        config_name or "config",
        target,
        budget,
        shape,
        model_config,
        optim_config,
        configs_lib.auto_microbatches(config),
        train,
        evaluation,
        eval_batch,
        notes,
    )
    if config.train.eval_halting != "fixed":
        notes.append(
            "the eval step planned is the batch (fixed-halting) one; adaptive halting runs "
            "train.eval_slots rows at a time"
        )
    if train.note:
        notes.append(f"train step {train.note}")
    if search and budget is not None:
        if not train.fits(budget):
            plan.microbatches = fit.fewest_microbatches(
                plan_fn, model_config, optim_config, target.num_devices, budget, known=train
            )
            if not model_config.remat:
                plan.remat = fit.remat_memory(plan_fn, model_config, optim_config)
        if largest_batch:
            plan.largest_rows = fit.largest_rows_per_device(
                plan_fn, model_config, optim_config, target.num_devices, budget, known=train
            )
    return plan


def _planner(mesh, target: Target) -> fit.PlanFn:
    def plan(model_config: TRMConfig, optim_config: OptimConfig) -> StepMemory:
        try:
            with _compile_only(target):
                return train_step_memory(model_config, optim_config, mesh, target.platform)
        except Exception as err:  # noqa: BLE001 - XLA's errors, as one line
            raise PlanError(f"the train step does not compile for {target.name}: {first_line(err)}") from None

    return plan


@contextlib.contextmanager
def _compile_only(target: Target) -> Iterator[None]:
    """No persistent compilation cache while compiling for devices that are only described:
    their executables cannot be loaded from it or stored in it. (JAX decides once per process
    whether it uses the cache; where it already does, it warns that it cannot and compiles
    anyway: those warnings are not shown.)"""
    if target.name == "local":
        yield
        return
    enabled = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*persistent compilation cache")
            yield
    finally:
        jax.config.update("jax_enable_compilation_cache", enabled)


def _train_with_attention(
    model_config: TRMConfig, optim_config: OptimConfig, mesh, target: Target, notes: list[str]
) -> tuple[TRMConfig, StepMemory]:
    """The attention a run on ``target`` would use (``auto``: the platform's fused kernel in
    16-bit precision), and the train step's plan with it; a fused kernel chosen by ``auto``
    that cannot be compiled here is replaced by XLA's attention, with a note."""
    if model_config.mlp_t:
        return model_config, _planner(mesh, target)(model_config, optim_config)
    platform = target.platform
    if model_config.attention_impl == "auto":
        impl = attention_check.auto_impl(model_config, platform)
        chosen_by_auto = True
    else:
        try:
            attention_check.check_platform(model_config.attention_impl, platform)
        except ConfigError as err:
            raise PlanError(str(err)) from None
        impl, chosen_by_auto = model_config.attention_impl, False
    planned = model_config.replace(attention_impl=impl)
    try:
        return planned, _planner(mesh, target)(planned, optim_config)
    except PlanError as err:
        if not chosen_by_auto or impl == "xla":
            raise
        missing = impl == "cudnn" and "cudnn not found" in str(err).lower()
        notes.append(
            f"attention: {impl} could not be planned here ({err}); planned with XLA's attention, which "
            f"a run falls back to as well" + (" (cuDNN comes with pip install -e '.[cuda12]')" if missing else "")
        )
    planned = model_config.replace(attention_impl="xla")
    return planned, _planner(mesh, target)(planned, optim_config)
