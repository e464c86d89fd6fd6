"""Checksums of arrays, computed where the arrays live.

A checkpoint records one checksum per array of the train state when it is saved and compares
it when it is restored, so that garbled bytes anywhere in an array's files are found before a
run continues from wrong weights (the OCDBT/zstd files orbax writes carry no checksum of their
own that is checked on read).

The checksum of an array is two 32-bit sums over its elements' bit patterns: of each element
mixed with its position by murmur3's finaliser, and of each element times an odd weight given
by its position; a changed, swapped or moved element changes them. Sums modulo 2**32 do not
depend on the order they are taken in: the value is the same for an array on one device or
sharded over many, on any backend. It runs as one jitted function over the whole state on the
devices holding it, and only the sums (8 bytes per array) reach the host.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

_UINT_OF_SIZE = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}
# An odd constant spreading positions over the 32 bits (from the golden ratio).
_GOLDEN = 0x9E3779B9


def _fmix32(x: jax.Array) -> jax.Array:
    """murmur3's 32-bit finaliser: every input bit affects every output bit."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def _words(x: jax.Array) -> jax.Array:
    """The array's bit patterns as uint32 words (8-byte elements: two words each)."""
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    size = jnp.dtype(x.dtype).itemsize
    if size == 8:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)  # a trailing axis of 2 words
    if size not in _UINT_OF_SIZE:
        raise TypeError(f"checksum: unsupported dtype {x.dtype}")
    return jax.lax.bitcast_convert_type(x, _UINT_OF_SIZE[size]).astype(jnp.uint32)


def _position(shape: tuple[int, ...]) -> jax.Array:
    """Each element's row-major position, modulo 2**32, built from iotas (no reshape of a
    sharded array)."""
    position = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(len(shape))):
        position = position + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride % 2**32)
        stride *= shape[axis]
    return position


def _array_checksum(x: jax.Array) -> jax.Array:
    words = _words(x)
    position = _position(words.shape)
    first = jnp.sum(_fmix32(words + position * jnp.uint32(_GOLDEN)), dtype=jnp.uint32)
    second = jnp.sum(words * (position | jnp.uint32(1)), dtype=jnp.uint32)  # odd: no bit is lost
    return jnp.stack([first, second])


@functools.partial(jax.jit)
def _checksums(arrays: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return {name: _array_checksum(x) for name, x in arrays.items()}


def checksums(arrays: Mapping[str, Any]) -> dict[str, str]:
    """``{name: 16 hex digits}`` for every array of ``arrays`` (jax or numpy; zero-size arrays
    are skipped: they hold no bytes). Blocks until the sums are computed."""
    present = {name: x for name, x in arrays.items() if math.prod(np.shape(x)) > 0}
    if not present:
        return {}
    sums = jax.device_get(
        _checksums({name: jnp.asarray(x) if isinstance(x, np.ndarray) else x for name, x in present.items()})
    )
    return {name: "".join(f"{int(v):08x}" for v in np.asarray(value)) for name, value in sums.items()}
