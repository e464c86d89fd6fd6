"""XLA's memory plan of the train and eval steps, compiled ahead of time for a target.

Nothing is allocated: the steps are lowered with abstract inputs (shapes, dtypes and the
shardings a run uses: :func:`trm_jax.train.parallel.abstract_state`) and compiled for the
target's devices, and ``compiled.memory_analysis()`` gives what each device holds:

* arguments: the train state (its share of it: the ACT carry is split by rows, everything
  else replicated) and its rows of the batch;
* outputs, of which ``aliased`` bytes reuse donated argument buffers (the new train state);
* temporaries: the activations the backward pass keeps, and scratch.

The peak a device needs is arguments + outputs - aliased + temporaries. A TPU compile that
does not fit its HBM fails with RESOURCE_EXHAUSTED; its message gives the temporaries, which
are reported, marked as over the limit.

Also here: the memory limit a device's runtime reports, and silencing what native runtimes
print while compiling for devices that are only described.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import sys
import tempfile
import time
from typing import Any, Callable, Iterator

import jax

from trm_jax.config import OptimConfig, TRMConfig
from trm_jax.train import parallel

# XLA:GPU compiled without a device cannot autotune its Triton GEMM fusions and, for some of
# this model's products, then fails to tile the default choice; cuBLAS GEMMs need no tuning.
GPU_WITHOUT_TRITON_GEMM = {"xla_gpu_enable_triton_gemm": False}
_TRITON_TILING_ERROR = "Couldn't find output tile sizes"
_EXHAUSTED = re.compile(r"HLO temporaries \(([\d.]+)([KMGT]?)\)")
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
GIB = 2**30


@dataclasses.dataclass(frozen=True)
class StepMemory:
    """Per-device memory of one compiled step (bytes), and how it was obtained."""

    rows_per_device: int
    state_bytes: int  # the shapes' bytes (XLA may pad them to its layouts' tiles)
    batch_bytes: int
    argument_bytes: int  # XLA's (the state's and batch's buffers); their shapes' bytes when refused
    output_bytes: int
    aliased_bytes: int
    temp_bytes: int
    compile_s: float
    exhausted: bool = False  # the compiler refused: over the device's memory (temporaries from its message)
    note: str = ""  # e.g. compiled with cuBLAS GEMMs

    @property
    def peak_bytes(self) -> int:
        """What the device must hold at once: arguments + outputs - aliased + temporaries."""
        return self.argument_bytes + self.output_bytes - self.aliased_bytes + self.temp_bytes

    def fits(self, budget_bytes: int | None) -> bool:
        return not self.exhausted and (budget_bytes is None or self.peak_bytes <= budget_bytes)

    def summary(self) -> str:
        """``29.4 GiB (state 2.3, batch 0.0, temporaries 27.1)``."""
        over = " (the compiler's limit exceeded)" if self.exhausted else ""
        return (
            f"{self.peak_bytes / GIB:.1f} GiB (state {self.state_bytes / GIB:.1f}, batch "
            f"{self.batch_bytes / GIB:.2f}, temporaries {self.temp_bytes / GIB:.1f}){over}"
        )

    def to_json(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values.update(peak_bytes=self.peak_bytes)
        return values


def bytes_per_device(tree: Any) -> int:
    """Bytes one device holds of a pytree of sharded ``ShapeDtypeStruct``s."""
    total = 0
    for leaf in jax.tree_util.tree_leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        total += math.prod(shape) * _itemsize(leaf.dtype)
    return total


def _itemsize(dtype: Any) -> int:
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return 8  # a threefry key: two uint32
    return dtype.itemsize


def train_step_memory(
    model_config: TRMConfig, optim_config: OptimConfig, mesh: jax.sharding.Mesh, platform: str, quiet: bool = True
) -> StepMemory:
    """The memory plan of the sharded, state-donating train step at the global batch of
    ``optim_config`` (each device's ``global / devices`` rows).

    A compile that fails for memory gives a plan marked ``exhausted``; other compile errors
    propagate. ``quiet``: silence what native libraries print while compiling (start-up logs
    of a TPU or GPU runtime that is only described, not present).
    """
    return compile_train_step(model_config, optim_config, mesh, platform, quiet)[0]


def compile_train_step(
    model_config: TRMConfig, optim_config: OptimConfig, mesh: jax.sharding.Mesh, platform: str, quiet: bool = True
) -> tuple[StepMemory, Any]:
    """:func:`train_step_memory` and the compiled step (None when the compiler refused it for
    memory): on real devices it runs the train state and batches a run lays out on ``mesh``."""
    parallel.check_batch_divisible(optim_config.global_batch_size, mesh, optim_config.microbatches)
    state = parallel.abstract_state(model_config, optim_config, mesh)
    batch = parallel.abstract_batch(model_config, optim_config.global_batch_size, mesh)
    return _plan(
        lambda: parallel.jit_train_step(model_config, optim_config, mesh, state),
        (state, batch),
        optim_config.global_batch_size // mesh.size,
        platform,
        quiet,
    )


def eval_step_memory(
    model_config: TRMConfig,
    optim_config: OptimConfig,
    mesh: jax.sharding.Mesh,
    platform: str,
    batch_size: int,
    num_steps: int | None = None,
    quiet: bool = True,
) -> StepMemory:
    """The memory plan of the batch eval step (every row runs ``num_steps`` ACT steps, default
    ``halt_max_steps``) on ``batch_size`` rows; the train state is an argument, not donated."""
    parallel.check_batch_divisible(batch_size, mesh)
    state = parallel.abstract_state(model_config, optim_config, mesh)
    batch = parallel.abstract_batch(model_config, batch_size, mesh)

    def step():
        return parallel.jit_eval_step(model_config, mesh, state, use_ema=optim_config.ema, num_steps=num_steps)

    return _plan(step, (state, batch), batch_size // mesh.size, platform, quiet)[0]


def compile_step(jitted: Any, args: tuple, platform: str) -> tuple[Any, str]:
    """``jitted.lower(*args).compile()``, and a note of what had to change for it to compile.

    On a GPU, a failure to tile a Triton GEMM fusion is retried with cuBLAS GEMMs
    (:data:`GPU_WITHOUT_TRITON_GEMM`); the note says so. Other errors propagate.
    """
    lowered = jitted.lower(*args)
    try:
        return lowered.compile(), ""
    except Exception as err:  # noqa: BLE001 - XLA raises its own runtime error types
        if platform != "gpu" or _TRITON_TILING_ERROR not in str(err):
            raise
    return (
        lowered.compile(compiler_options=GPU_WITHOUT_TRITON_GEMM),
        "compiled with cuBLAS GEMMs (XLA could not tile a Triton GEMM fusion)",
    )


def compile_on_first_call(jitted: Any, platform: str) -> Callable:
    """``jitted`` compiled at its first call through :func:`compile_step` (so that a GPU's
    Triton GEMM tiling failure falls back to cuBLAS there too), then reused for inputs of the
    same shapes and shardings."""
    compiled = None

    def call(*args):
        nonlocal compiled
        if compiled is None:
            compiled, _ = compile_step(jitted, args, platform)
        return compiled(*args)

    return call


def exhausted_temp_bytes(err: BaseException) -> int | None:
    """The temporaries a RESOURCE_EXHAUSTED compile error reports, or None for other errors."""
    text = str(err)
    if "RESOURCE_EXHAUSTED" not in text:
        return None
    match = _EXHAUSTED.search(text)
    return int(float(match.group(1)) * _UNITS[match.group(2)]) if match else -1


def _plan(
    make_step: Callable[[], Any], args: tuple, rows_per_device: int, platform: str, quiet: bool
) -> tuple[StepMemory, Any]:
    state, batch = args
    state_bytes, batch_bytes = bytes_per_device(state), bytes_per_device(batch)
    start = time.perf_counter()
    try:
        with quiet_native_logs() if quiet else contextlib.nullcontext():
            compiled, note = compile_step(make_step(), args, platform)
    except Exception as err:  # noqa: BLE001
        temp = exhausted_temp_bytes(err)
        if temp is None:
            raise
        return StepMemory(
            rows_per_device,
            state_bytes,
            batch_bytes,
            state_bytes + batch_bytes,
            output_bytes=0,
            aliased_bytes=0,
            temp_bytes=max(temp, 0),
            compile_s=time.perf_counter() - start,
            exhausted=True,
        ), None
    stats = compiled.memory_analysis()
    return StepMemory(
        rows_per_device,
        state_bytes,
        batch_bytes,
        stats.argument_size_in_bytes,
        output_bytes=stats.output_size_in_bytes,
        aliased_bytes=stats.alias_size_in_bytes,
        temp_bytes=stats.temp_size_in_bytes,
        compile_s=time.perf_counter() - start,
        note=note,
    ), compiled


def device_memory_limit(device) -> int | None:
    """The bytes the runtime lets a device's buffers use (``memory_stats()["bytes_limit"]``:
    on a GPU, XLA's preallocated share, by default 75% of the memory); None where none is
    reported (CPU)."""
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        return None
    return int(stats["bytes_limit"]) if stats and stats.get("bytes_limit") else None


@contextlib.contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Silences what native libraries write straight to the process's stderr (libtpu and the
    CUDA plugin log their start-up off their hardware there); Python's own errors still raise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
