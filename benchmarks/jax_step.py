"""Our JAX train step, wrapped for the harness: compile once, call, synchronise, measure.

The step itself is the project's (``trm_jax.train.state.create_train_state`` +
``trm_jax.train.step.make_train_step``); this module only compiles it ahead of time (so the
compile time, the XLA FLOPs and the XLA memory plan can be read), feeds it device-resident
batches and reports the loss in the reference's convention.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import BenchConfig, get_config, xla_cost_flops
from trm_jax.config import TRMConfig


def jax_device(kind: str) -> jax.Device:
    """The JAX device for ``--device``: ``cpu``, ``gpu`` or ``auto`` (the default backend)."""
    if kind == "auto":
        return jax.devices()[0]
    try:
        return jax.devices(kind)[0]
    except RuntimeError as err:
        raise RuntimeError(f"--device {kind}: JAX has no {kind} backend here ({err})") from err


def device_and_dtype(args: Any) -> tuple[jax.Device, str]:
    """``(device, dtype)`` of the ``--device/--dtype`` arguments; the dtype defaults to
    bfloat16 on a GPU and float32 elsewhere."""
    device = jax_device(args.device)
    return device, args.dtype or ("bfloat16" if device.platform == "gpu" else "float32")


def bench_setup(args: Any) -> tuple[BenchConfig, jax.Device, str]:
    """``(config, device, dtype)`` of the ``--config/--device/--dtype`` arguments."""
    return (get_config(args.config), *device_and_dtype(args))


def matmul_precision(dtype: str) -> str:
    """float32 runs use full-precision matmuls, as PyTorch does by default (no TF32): the
    float32 loss check and float32 timings then compare the same arithmetic."""
    return "highest" if dtype == "float32" else "default"


def precision_for(config: TRMConfig) -> str:
    """:func:`matmul_precision` of a model config's forward dtype."""
    return matmul_precision(config.forward_dtype)


class JaxTrainStep:
    """Our jitted train step with its state, compiled ahead of time for one batch shape."""

    def __init__(
        self,
        bench: BenchConfig,
        config: TRMConfig,
        variables: Mapping[str, Any],
        device: jax.Device,
        seed: int,
        microbatches: int = 1,
    ) -> None:
        from trm_jax.train import parallel

        self.config = config
        self.device = device
        self.batch_size = config.batch_size
        optim_config = optim_config_for(bench, config.batch_size, microbatches)
        # The production path on a one-device mesh: the state is created by a jit with its
        # shardings and the step is jitted with the state donated, as the trainer runs it.
        self.mesh = parallel.make_mesh([device])
        self.state = parallel.create_sharded_train_state(
            config, optim_config, jax.random.key(seed), self.mesh, variables=variables, batch_size=config.batch_size
        )
        self._step_fn = parallel.jit_train_step(config, optim_config, self.mesh, self.state)
        self._shard_batch = parallel.shard_batch
        self._compiled: Any = None
        self.compile_seconds: float | None = None
        self.flops: float | None = None
        self.memory_analysis: dict[str, int] | None = None
        self.steps_taken = 0

    @staticmethod
    def init_variables(config: TRMConfig, seed: int) -> dict[str, Any]:
        """Fresh variables with the reference's init (float32 parameters)."""
        from trm_jax.model.network import init_variables

        return init_variables(config, jax.random.key(seed))

    def put(self, batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """A numpy batch on this step's device."""
        return self._shard_batch({k: np.asarray(v) for k, v in batch.items()}, self.mesh)

    def compile(self, batch: Mapping[str, np.ndarray]) -> float:
        """Lowers and compiles the step for this batch shape; returns the seconds it took."""
        example = self.put(batch)
        start = time.perf_counter()
        with jax.default_matmul_precision(precision_for(self.config)):
            lowered = self._step_fn.lower(self.state, example)
            self._compiled = lowered.compile()
        self.compile_seconds = time.perf_counter() - start
        self.flops = xla_cost_flops(self._compiled)
        self.memory_analysis = _memory_analysis(self._compiled)
        return self.compile_seconds

    def __call__(self, batch: Mapping[str, jax.Array]) -> Any:
        """One train step on a device batch; returns its metrics (not synchronised)."""
        if self._compiled is None:
            raise RuntimeError("JaxTrainStep: call compile(batch) before stepping")
        self.state, metrics = self._compiled(self.state, batch)
        self.steps_taken += 1
        return metrics

    def hlo_text(self) -> str:
        """The optimised HLO of the compiled step (what the profiler's event names refer to)."""
        if self._compiled is None:
            raise RuntimeError("JaxTrainStep: call compile(batch) first")
        return self._compiled.as_text()

    @staticmethod
    def sync(result: Any) -> None:
        """Blocks until every array of ``result`` is computed."""
        jax.block_until_ready(result)

    def loss(self, metrics: Mapping[str, Any]) -> float:
        """The step's total loss undivided (lm_loss + 0.5 q_halt_loss), as the reference's
        loss head returns it; the step reports it divided by the global batch."""
        return float(metrics["loss"]) * self.batch_size

    def peak_memory_bytes(self) -> int | None:
        """Peak device memory in use (allocator statistics; None where unavailable, e.g. CPU)."""
        stats = self.device.memory_stats() if hasattr(self.device, "memory_stats") else None
        if not stats or "peak_bytes_in_use" not in stats:
            return None
        return int(stats["peak_bytes_in_use"])


class MatmulCeiling:
    """What one jitted matmul achieves on a device: the yardstick of a step's efficiency.

    ``measure()`` times bursts of ``calls`` [648, 512] x [512, 2048] matmuls (the Sudoku
    models' rows at batch 8, hidden size, 4x hidden size) in the step's dtype for at least
    ``window_s`` seconds and returns the fastest burst's FLOP/s. The window outlasts the
    slowdown that follows a large step on a CPU (measured: ~0.2 s after a batch-32 Sudoku
    step, the matmul runs at about half speed), so it measures the machine, not the
    previous step's aftermath.
    """

    SHAPE = (648, 512, 2048)

    def __init__(
        self, device: jax.Device, dtype: str, seed: int = 0, calls: int = 10, window_s: float = 0.5, min_bursts: int = 5
    ) -> None:
        m, k, n = self.SHAPE
        rng = np.random.default_rng(seed)
        self.a = jax.device_put(jnp.asarray(rng.standard_normal((m, k)), dtype), device)
        self.b = jax.device_put(jnp.asarray(rng.standard_normal((k, n)), dtype), device)
        self.dtype, self.calls, self.window_s, self.min_bursts = dtype, calls, window_s, min_bursts
        self.flops = 2.0 * m * k * n
        self._precision = matmul_precision(dtype)
        self._matmul = jax.jit(jnp.matmul)
        with jax.default_matmul_precision(self._precision):
            self._matmul(self.a, self.b).block_until_ready()

    def measure(self) -> float:
        """FLOP/s of the fastest burst within the window."""
        best, bursts, start = 0.0, 0, time.perf_counter()
        with jax.default_matmul_precision(self._precision):
            while bursts < self.min_bursts or time.perf_counter() - start < self.window_s:
                burst_start = time.perf_counter()
                for _ in range(self.calls):
                    out = self._matmul(self.a, self.b)
                out.block_until_ready()
                best = max(best, self.flops * self.calls / (time.perf_counter() - burst_start))
                bursts += 1
        return best

    def describe(self) -> dict[str, Any]:
        """The ceiling's definition, for result files."""
        m, k, n = self.SHAPE
        return {
            "shape_mkn": list(self.SHAPE),
            "dtype": self.dtype,
            "calls_per_burst": self.calls,
            "window_s": self.window_s,
            "text": f"fastest burst of {self.calls} jitted {m}x{k} @ {k}x{n} {self.dtype} "
            f"matmuls within {self.window_s} s",
        }


def _memory_analysis(compiled: Any) -> dict[str, int] | None:
    """XLA's static memory plan of an executable (arguments, outputs, temporaries), in bytes."""
    try:
        analysis = compiled.memory_analysis()
    except Exception:
        return None
    if analysis is None:
        return None
    fields = (
        "argument_size_in_bytes",
        "output_size_in_bytes",
        "alias_size_in_bytes",
        "temp_size_in_bytes",
        "generated_code_size_in_bytes",
    )
    out = {f: int(getattr(analysis, f)) for f in fields if hasattr(analysis, f)}
    if {"argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes"} <= out.keys():
        # Donated (aliased) outputs reuse argument buffers: count them once.
        out["total_bytes"] = (
            out["argument_size_in_bytes"]
            + out["output_size_in_bytes"]
            - out.get("alias_size_in_bytes", 0)
            + out["temp_size_in_bytes"]
        )
    return out


def optim_config_for(bench: BenchConfig, batch_size: int, microbatches: int = 1) -> Any:
    """Our ``OptimConfig`` with the bench setting's hyper-parameters, batch size and number
    of microbatches."""
    return dataclasses.replace(bench.optim, global_batch_size=batch_size, microbatches=microbatches)


def load_checkpoint_variables(
    directory: str, config: TRMConfig, use_ema: bool = True, step: int | None = None
) -> dict[str, Any]:
    """Model variables from one of our train-state checkpoints (``trm_jax.train.checkpoint``).

    ``directory`` is a checkpoint directory or a training run's work dir (its
    ``checkpoints/`` sub-directory is used); ``step`` defaults to the latest.

    Takes the EMA weights when the state has them and ``use_ema`` (the reference evaluates
    with EMA weights), else the raw parameters, plus the buffers. The shapes must fit
    ``config``; a mismatch names the parameter and both shapes.
    """
    from trm_jax.model.network import init_variables
    from trm_jax.train.checkpoint import Checkpointer

    run_subdir = os.path.join(directory, "checkpoints")  # a training run's work dir
    if os.path.isdir(run_subdir):
        directory = run_subdir
    with Checkpointer(directory, async_save=False) as checkpointer:
        if checkpointer.latest_step() is None:
            raise FileNotFoundError(f"{directory}: no checkpoint found")
        state, _extras = checkpointer.restore(step)
    for key in ("params", "buffers"):
        if key not in state:
            raise ValueError(
                f"checkpoint at {directory}: no {key!r} entry (found {sorted(state)}): not a trm-jax train state"
            )
    params = state["ema"] if use_ema and "ema" in state else state["params"]
    variables = {"params": params, "buffers": {k: state["buffers"][k] for k in ("H_init", "L_init", "puzzle_emb")}}
    expected = jax.eval_shape(lambda: init_variables(config, jax.random.key(0)))
    got = jax.tree_util.tree_flatten_with_path(variables)[0]
    want = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
    if len(got) != len(want):
        raise ValueError(f"checkpoint at {directory}: {len(got)} arrays, the model config needs {len(want)}")
    for path, leaf in got:
        name = jax.tree_util.keystr(path)
        if path not in want:
            raise ValueError(f"checkpoint at {directory}: unexpected array {name}")
        if tuple(np.shape(leaf)) != tuple(want[path].shape):
            raise ValueError(
                f"checkpoint at {directory}: {name} has shape {np.shape(leaf)}, "
                f"the model config needs {want[path].shape}"
            )
    return jax.tree_util.tree_map(jax.numpy.asarray, variables)
