"""Flash attention on TPU: the Pallas (Mosaic) kernel that ships with JAX, applied to TRM's
non-causal attention and partitioned over a data-parallel mesh.

XLA's attention materialises the [rows, heads, L, L] scores, and the differentiated cycle's
backward pass needs them (or recomputes them) for every call of the network: at the paper's
ARC shapes (916 positions) that is most of the train step's memory. The kernel of
``jax.experimental.pallas.ops.tpu.flash_attention`` computes the softmax block by block and
keeps only the output and two per-row statistics for its backward pass.

What this module adds around the kernel:

* **Shapes.** The kernel works on [B, H, L, hd] blocks of 128 positions. TRM's sequences
  (97 for Sudoku, 916 for ARC and mazes: tokens + puzzle prefix) are padded to a multiple of
  128; segment ids (1 for real positions, 0 for padding) keep every real query from seeing a
  padded key, so the real outputs are those of attention over the real positions only.
* **Partitioning.** A Mosaic kernel is an opaque custom call that XLA cannot split over
  devices by itself, so under a sharded ``jit`` it must run inside ``shard_map``, one call per
  device on its rows. The model code does not know the mesh: the train and eval steps of
  :mod:`trm_jax.train.parallel` (and the inference solver) trace under
  :func:`partitioned_over`, which tells the attention which mesh axis splits the rows.
  Without it (one device, or under ``pmap``) the kernel runs on the rows it is given.

The kernel runs on TPU only. Tests run it on CPU in Pallas' TPU interpret mode
(``jax.experimental.pallas.tpu.force_tpu_interpret_mode``), where it computes the same
function, and compare it with XLA's attention in values and gradients.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

Array = jax.Array

# The kernel's block length (its minimum and default): sequences are padded to a multiple of it.
BLOCK = 128

# (mesh, axis name) that splits the rows of every attention traced in this context, or None.
_PARTITION: contextvars.ContextVar[tuple[Mesh, str] | None] = contextvars.ContextVar(
    "trm_jax_attention_partition", default=None
)


@contextlib.contextmanager
def partitioned_over(mesh: Mesh | None, axis: str) -> Iterator[None]:
    """Within this context (at trace time), a kernel attention splits its rows over
    ``mesh[axis]`` with ``shard_map``; a mesh of one device, or None, means no split."""
    token = _PARTITION.set((mesh, axis) if mesh is not None and mesh.shape[axis] > 1 else None)
    try:
        yield
    finally:
        _PARTITION.reset(token)


def partitioned(fn: Callable, mesh: Mesh | None, axis: str) -> Callable:
    """``fn`` traced under :func:`partitioned_over` (``mesh``, ``axis``): what a function that
    is jitted over a mesh with rows split along ``axis`` needs for kernel attentions."""

    @functools.wraps(fn)
    def traced(*args, **kwargs):
        with partitioned_over(mesh, axis):
            return fn(*args, **kwargs)

    # jit names the program after the function (``jit(train_step)`` in profiles and HLO); a
    # functools.partial has no name of its own.
    traced.__name__ = getattr(fn, "__name__", getattr(getattr(fn, "func", None), "__name__", "traced"))
    return traced


def padded_length(length: int) -> int:
    """``length`` rounded up to the kernel's block of 128 positions."""
    return -(-length // BLOCK) * BLOCK


def tpu_flash_attention(q: Array, k: Array, v: Array) -> Array:
    """Non-causal scaled dot-product attention of [B, L, H, hd] tensors with the TPU kernel.

    Same function as ``jax.nn.dot_product_attention(q, k, v)`` (scale 1/sqrt(hd)); rows are
    split over the mesh of an enclosing :func:`partitioned_over`.
    """
    partition = _PARTITION.get()
    if partition is None:
        return _attention_on_rows(q, k, v)
    mesh, axis = partition
    spec = P(axis)
    return _shard_map(_attention_on_rows, mesh, (spec, spec, spec), spec)(q, k, v)


def _attention_on_rows(q: Array, k: Array, v: Array) -> Array:
    from jax.experimental.pallas.ops.tpu import flash_attention as kernel  # noqa: PLC0415

    batch, length, heads, head_dim = q.shape
    padded = padded_length(length)
    pad = ((0, 0), (0, padded - length), (0, 0), (0, 0))
    # [B, L, H, hd] -> [B, H, Lp, hd], the kernel's layout.
    q, k, v = (jnp.swapaxes(jnp.pad(x, pad), 1, 2) for x in (q, k, v))
    segments = None
    if padded != length:
        real = (jnp.arange(padded) < length).astype(jnp.int32)
        ids = jnp.broadcast_to(real, (batch, padded))
        segments = kernel.SegmentIds(q=ids, kv=ids)
    out = kernel.flash_attention(q, k, v, segment_ids=segments, sm_scale=1.0 / math.sqrt(head_dim))
    return jnp.swapaxes(out, 1, 2)[:, :length]


def _shard_map(fn, mesh: Mesh, in_specs, out_specs):
    """``jax.shard_map`` (``jax.experimental.shard_map`` on releases before it moved)."""
    if hasattr(jax, "shard_map"):
        return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    from jax.experimental.shard_map import shard_map  # noqa: PLC0415

    return shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)
