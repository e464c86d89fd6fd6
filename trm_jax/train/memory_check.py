"""Before a run's first step: does its train step fit the device's memory?

On a device whose runtime reports a memory limit (GPU, TPU), or with
``train.device_memory_gib`` set, the train step is compiled before the first step and XLA's
memory plan of it (:mod:`trm_jax.train.step_memory`) is compared with the limit:

* it fits: the run goes on with that compiled step (no second compile);
* ``optim.microbatches=auto`` (the experiment configs' default): the fewest microbatches
  whose step fits are chosen, and the run says so in one line;
* otherwise the run stops before anything is written, with one line that names the settings
  that fit (found by compiling them): never an out-of-memory error from XLA mid-run.

Without a limit (a CPU) nothing is compiled ahead and ``auto`` means 1 microbatch. With
``train.parallel=pmap`` the check plans the sharded jit step (the same computation) and the
pmapped step is compiled at its first call, as before.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections

from trm_jax import configs as configs_lib
from trm_jax.config import ConfigError, OptimConfig, TRMConfig
from trm_jax.train import memory_search as fit
from trm_jax.train.step_memory import GIB, StepMemory, compile_train_step, device_memory_limit


class MemoryPlanError(ConfigError):
    """The train step does not fit the device's memory as configured (one line: what fits)."""


@dataclasses.dataclass
class FittedStep:
    """The optimiser settings a run uses, and its compiled train step when one was made."""

    optim_config: OptimConfig
    compiled: Any = None  # the jitted train step compiled for the run's state and batches
    memory: StepMemory | None = None
    message: str | None = None  # what the run says about its choice


def memory_budget(config: ml_collections.ConfigDict, devices: list | None = None) -> int | None:
    """Bytes per device the train step may plan for: ``train.device_memory_gib`` when set,
    else the smallest limit this process's devices report, else None (no limit known)."""
    if config.train.device_memory_gib > 0:
        return int(config.train.device_memory_gib * GIB)
    limits = [device_memory_limit(d) for d in (devices or jax.local_devices())]
    return None if not limits or None in limits else min(limits)


def fit_train_step(
    config: ml_collections.ConfigDict,
    model_config: TRMConfig,
    optim_config: OptimConfig,
    mesh: jax.sharding.Mesh,
    budget: int | None,
) -> FittedStep:
    """The run's optimiser settings and compiled step after the memory check (see the module
    docstring). ``optim_config.microbatches`` is the configured count (1 for auto)."""
    auto = configs_lib.auto_microbatches(config)
    if budget is None:
        return FittedStep(optim_config)
    platform = mesh.devices.flat[0].platform
    compiled_by: dict[tuple[TRMConfig, OptimConfig], Any] = {}

    def plan(model: TRMConfig, optim: OptimConfig) -> StepMemory:
        memory, compiled = compile_train_step(model, optim, mesh, platform, quiet=False)
        compiled_by[(model, optim)] = compiled
        return memory

    memory = plan(model_config, optim_config)
    if memory.fits(budget):
        return FittedStep(
            optim_config,
            compiled_by[(model_config, optim_config)],
            memory,
            f"note: the train step was {memory.note}" if memory.note else None,
        )
    limit = f"{budget / GIB:.1f} GiB per device ({_budget_source(config, mesh)})"
    needs = f"the train step plans {memory.summary()} per device, over the {limit}"
    found = fit.fewest_microbatches(plan, model_config, optim_config, mesh.size, budget, known=memory)
    if auto and found is not None:
        count, chosen = found
        optim = dataclasses.replace(optim_config, microbatches=count)
        return FittedStep(
            optim,
            compiled_by[(model_config, optim)],
            chosen,
            f"optim.microbatches=auto: {count} ({needs} in one chunk; in {count} it plans "
            f"{chosen.peak_bytes / GIB:.1f} GiB)",
        )
    options = []
    if found is not None:
        count, chosen = found
        options.append(
            f"--config.optim.microbatches={count} plans {chosen.peak_bytes / GIB:.1f} GiB "
            f"(--config.optim.microbatches=auto chooses it at start-up)"
        )
    if not model_config.remat:
        remat = fit.remat_memory(plan, model_config, optim_config)
        if remat.fits(budget):
            options.append(f"--config.model.remat=true plans {remat.peak_bytes / GIB:.1f} GiB")
    fix = (
        "; ".join(options)
        if options
        else ("no microbatch count tried or remat fits: use more devices or a smaller --config.optim.global_batch_size")
    )
    what = "optim.microbatches=auto found no count that fits: " if auto else ""
    raise MemoryPlanError(f"{what}{needs}: {fix}")


def _budget_source(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> str:
    if config.train.device_memory_gib > 0:
        return "train.device_memory_gib"
    return f"the limit of {mesh.devices.flat[0].device_kind}"
