"""Data parallelism: a sharded ``jax.jit`` over a 1-D device mesh (the main path), a thin
``jax.pmap`` wrapper over the same step, and multi-host set-up.

Sharding: the batch and the ACT carry are split along the batch axis over the mesh axis
``"data"``; parameters, buffers, optimiser state, EMA, step and RNG are replicated. XLA
inserts the gradient all-reduce and the gathers of the sparse puzzle-embedding update.

Multi-host (TPU pod slices, multi-node GPU): call :func:`initialize_distributed` first; each
process then loads only its slice of the global batch and :func:`shard_batch` assembles the
global array with ``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from trm_jax.config import TRMConfig
from trm_jax.model.flash_attention import partitioned
from trm_jax.model.network import Variables
from trm_jax.train import step as step_lib
from trm_jax.train.state import OptimConfig, TrainState, create_train_state

DATA_AXIS = "data"


def initialize_distributed(
    coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> None:
    """``jax.distributed.initialize`` for multi-host runs; a no-op for a single process.

    On TPU pods and SLURM/Open MPI clusters JAX discovers the arguments itself; elsewhere pass
    them or set ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``.
    """
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and "JAX_NUM_PROCESSES" in os.environ:
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id is None and "JAX_PROCESS_ID" in os.environ:
        process_id = int(os.environ["JAX_PROCESS_ID"])
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )


def make_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh over ``devices``; by default every device of every process, in the order
    ``jax.make_mesh`` picks for the hardware topology."""
    # Shardings propagate as XLA decides: newer jax.make_mesh may default to Explicit axes. jax
    # releases before axis types (0.5.x) have only that behaviour and take no axis_types.
    axis_type = getattr(jax.sharding, "AxisType", None)
    kwargs = {"axis_types": (axis_type.Auto,)} if axis_type is not None else {}
    if devices is None:
        return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), **kwargs)
    return Mesh(np.asarray(devices), (DATA_AXIS,), **kwargs)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows (the leading axis) split over the mesh."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh."""
    return NamedSharding(mesh, P())


def state_shardings(state: TrainState, mesh: Mesh) -> TrainState:
    """Shardings for a (possibly abstract) train state: carry split by rows, rest replicated."""
    shard_rows, repl = batch_sharding(mesh), replicated(mesh)
    sharded = jax.tree_util.tree_map(lambda _: repl, state)
    return sharded.replace(carry=jax.tree_util.tree_map(lambda _: shard_rows, state.carry))


def check_batch_divisible(global_batch: int, mesh: Mesh, microbatches: int = 1) -> None:
    """Raises ValueError unless ``global_batch`` splits evenly over the mesh and, with
    ``microbatches`` > 1, so does each of its chunks."""
    if global_batch % (mesh.size * microbatches):
        over = f"x optim.microbatches={microbatches}" if microbatches > 1 else "of the mesh"
        raise ValueError(f"global batch {global_batch} is not divisible by the {mesh.size} devices {over}")


def create_sharded_train_state(
    model_config: TRMConfig,
    optim_config: OptimConfig,
    rng: jax.Array,
    mesh: Mesh,
    variables: Variables | None = None,
    batch_size: int | None = None,
) -> TrainState:
    """The train state created directly with its shardings (no host-side full copy)."""
    batch_size = batch_size or optim_config.global_batch_size
    check_batch_divisible(batch_size, mesh)
    create = functools.partial(create_train_state, model_config, optim_config, batch_size=batch_size)
    abstract = jax.eval_shape(create, rng, variables)
    return jax.jit(create, out_shardings=state_shardings(abstract, mesh))(rng, variables)


def abstract_state(model_config: TRMConfig, optim_config: OptimConfig, mesh: Mesh) -> TrainState:
    """Shapes, dtypes and (jit-layout) shardings of the train state, without computing it."""
    create = functools.partial(
        create_train_state, model_config, optim_config, batch_size=optim_config.global_batch_size
    )
    shapes = jax.eval_shape(create, jax.random.key(0))
    return jax.tree_util.tree_map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, state_shardings(shapes, mesh)
    )


def abstract_batch(model_config: TRMConfig, batch_size: int, mesh: Mesh) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes, dtypes and shardings of a global batch of ``batch_size`` rows (as
    :func:`shard_batch` lays it out)."""
    sharding = batch_sharding(mesh)
    shapes = {
        "inputs": (batch_size, model_config.seq_len),
        "labels": (batch_size, model_config.seq_len),
        "puzzle_identifiers": (batch_size,),
    }
    return {k: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=sharding) for k, shape in shapes.items()}


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Global batch arrays from this process's slice of the batch (rows in process order)."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def jit_train_step(model_config: TRMConfig, optim_config: OptimConfig, mesh: Mesh, state: TrainState) -> Callable:
    """The train step jitted over ``mesh`` with the state donated.

    With ``optim_config.microbatches`` > 1, every chunk must split evenly over the mesh
    (each device then runs its share of every chunk): the global batch must be a multiple
    of devices x microbatches.
    """
    check_batch_divisible(state.carry.steps.shape[0], mesh, optim_config.microbatches)
    shardings = state_shardings(state, mesh)
    return jax.jit(
        partitioned(step_lib.make_train_step(model_config, optim_config), mesh, DATA_AXIS),
        in_shardings=(shardings, batch_sharding(mesh)),
        out_shardings=(shardings, replicated(mesh)),
        donate_argnums=0,
    )


def jit_eval_step(
    model_config: TRMConfig, mesh: Mesh, state: TrainState, *, use_ema: bool = True, num_steps: int | None = None
) -> Callable:
    """The eval step jitted over ``mesh``: predictions sharded by rows, metrics replicated."""
    shardings = state_shardings(state, mesh)
    step = partitioned(step_lib.make_eval_step(model_config, use_ema=use_ema, num_steps=num_steps), mesh, DATA_AXIS)
    return jax.jit(
        step, in_shardings=(shardings, batch_sharding(mesh)), out_shardings=(batch_sharding(mesh), replicated(mesh))
    )


# --- pmap: a thin wrapper over the same step functions ---------------------------------


def _split_rows(x: Any, devices: int) -> Any:
    return x.reshape((devices, x.shape[0] // devices) + x.shape[1:])


def _pmap_layout(devices: list) -> NamedSharding:
    # pmap is built on jit + shard_map: a leading device axis sharded over a mesh of the
    # same devices is its native input layout.
    return NamedSharding(Mesh(np.asarray(devices), (DATA_AXIS,)), P(DATA_AXIS))


def replicate_for_pmap(state: TrainState, devices: list | None = None) -> TrainState:
    """State laid out for pmap: carry rows split over devices, everything else copied."""
    devices = jax.local_devices() if devices is None else devices
    n = len(devices)
    check = state.carry.steps.shape[0]
    if check % n:
        raise ValueError(f"carry batch {check} is not divisible by {n} devices")
    stacked = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), state)
    stacked = stacked.replace(carry=jax.tree_util.tree_map(lambda x: _split_rows(x, n), state.carry))
    return jax.device_put(stacked, _pmap_layout(devices))


def unreplicate_from_pmap(state: TrainState) -> TrainState:
    """Inverse of :func:`replicate_for_pmap` (device 0's copy; carry rows joined)."""
    first = jax.tree_util.tree_map(lambda x: x[0], state)
    return first.replace(carry=jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:]), state.carry))


def split_batch_for_pmap(batch: dict[str, Any], devices: int | list) -> dict[str, jax.Array]:
    """A host batch as pmap input: rows split into ``[devices, rows / devices, ...]``, each
    device's slice sent straight to it (no trip through device 0). ``devices``: a list, or
    a count of the first local devices."""
    devices = jax.local_devices()[:devices] if isinstance(devices, int) else devices
    layout = _pmap_layout(devices)
    return {k: jax.device_put(_split_rows(np.asarray(v), len(devices)), layout) for k, v in batch.items()}


def pmap_train_step(model_config: TRMConfig, optim_config: OptimConfig) -> Callable:
    """``train_step`` under ``jax.pmap`` (axis ``"data"``), state donated.

    Inputs: a state from :func:`replicate_for_pmap` and a batch from
    :func:`split_batch_for_pmap`; metrics come back identical on every device.
    """
    return jax.pmap(
        step_lib.make_train_step(model_config, optim_config, axis_name=DATA_AXIS), axis_name=DATA_AXIS, donate_argnums=0
    )
