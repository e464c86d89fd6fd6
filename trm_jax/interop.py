"""Interop with the official PyTorch checkpoints (``torch.save(model.state_dict())``).

The official names look like ``inner.L_level.layers.0.self_attn.qkv_proj.weight``, possibly
prefixed with ``_orig_mod.`` (torch.compile) and/or ``model.`` (the ACTLossHead wrapper).
Linear weights are [out, in] there and [in, out] (``kernel``) here.

torch is imported only inside :func:`load_torch_checkpoint`; the conversion functions take and
return numpy arrays, so they work without torch.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from trm_jax.config import TRMConfig
from trm_jax.fileio import atomic_write_with
from trm_jax.model.network import Variables, init_variables
from trm_jax.precision import at_least_float32

_PREFIXES = ("_orig_mod.", "model.")
_BUFFER_KEYS = {
    "inner.H_init": "H_init",
    "inner.L_init": "L_init",
    "inner.puzzle_emb.weights": "puzzle_emb",
}


class CheckpointMismatchError(ValueError):
    """A state_dict does not fit the model configuration."""


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def _torch_name(path: tuple[str, ...]) -> tuple[str, bool]:
    """Official state_dict name of a flax param path, and whether it is transposed."""
    parts = [re.sub(r"^layers_(\d+)$", r"layers.\1", p) for p in path]
    leaf = parts[-1]
    if leaf == "embed_tokens":
        return "inner.embed_tokens.embedding_weight", False
    if leaf == "embed_pos":
        return "inner.embed_pos.embedding_weight", False
    if leaf == "kernel":
        return "inner." + ".".join(parts[:-1]) + ".weight", True
    if leaf == "bias":
        return "inner." + ".".join(parts[:-1]) + ".bias", False
    raise KeyError(f"no official name for parameter {'/'.join(path)}")


def _param_paths(params: Any) -> list[tuple[tuple[str, ...], Any]]:
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return [(tuple(k.key for k in path), leaf) for path, leaf in flat]


def _at_least_float32(x: Any) -> np.ndarray:
    x = np.asarray(jax.device_get(x))
    return x.astype(at_least_float32(x.dtype))


def to_torch_state_dict(variables: Variables) -> dict[str, np.ndarray]:
    """Our variables as the official state_dict layout (numpy float32 arrays; float64 for a
    float64 model)."""
    out: dict[str, np.ndarray] = {}
    for path, leaf in _param_paths(variables["params"]):
        name, transposed = _torch_name(path)
        arr = _at_least_float32(leaf)
        out[name] = np.ascontiguousarray(arr.T if transposed else arr)
    for name, key in _BUFFER_KEYS.items():
        buf = _at_least_float32(variables["buffers"][key])
        if key == "puzzle_emb" and buf.shape[-1] == 0:
            continue
        out[name] = buf
    return out


def from_torch_state_dict(state_dict: Mapping[str, Any], config: TRMConfig, source: str = "state_dict") -> Variables:
    """Official state_dict (numpy or torch tensors) -> our variables for ``config``.

    Raises:
      CheckpointMismatchError: a missing or unexpected key, or a shape that does not match
        ``config``, naming the key, both shapes and ``source``.
    """
    arrays = {_strip_prefixes(k): _to_numpy(v) for k, v in state_dict.items()}
    template = jax.eval_shape(lambda: init_variables(config, jax.random.key(0)))
    params_out = {}
    used = set()

    def fetch(name: str, shape: tuple[int, ...], transposed: bool, dtype: Any) -> np.ndarray:
        if name not in arrays:
            raise CheckpointMismatchError(f"{source}: missing key {name!r} needed by the config")
        arr = arrays[name].astype(dtype)  # the config's parameter dtype: float32 or float64
        arr = arr.T if transposed else arr
        if tuple(arr.shape) != tuple(shape):
            raise CheckpointMismatchError(
                f"{source}: {name!r} has shape {tuple(arrays[name].shape)}, the config needs "
                f"{tuple(shape[::-1]) if transposed else tuple(shape)} (another architecture?)"
            )
        used.add(name)
        return arr

    for path, leaf in _param_paths(template["params"]):
        name, transposed = _torch_name(path)
        node = params_out
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = jnp.asarray(fetch(name, leaf.shape, transposed, leaf.dtype))
    buffers = {}
    for name, key in _BUFFER_KEYS.items():
        shape, dtype = template["buffers"][key].shape, template["buffers"][key].dtype
        if key == "puzzle_emb" and config.puzzle_emb_ndim == 0:
            buffers[key] = jnp.zeros(shape, dtype)
            continue
        buffers[key] = jnp.asarray(fetch(name, shape, False, dtype))
    # Non-persistent reference buffers (rotary tables, sparse-embedding scratch) are ignored.
    ignorable = re.compile(r"(rotary_emb\.|puzzle_emb\.local_)")
    unexpected = sorted(k for k in arrays if k not in used and not ignorable.search(k))
    if unexpected:
        raise CheckpointMismatchError(f"{source}: unexpected key(s) for this config: {', '.join(unexpected[:5])}")
    return {"params": params_out, "buffers": buffers}


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, possibly bfloat16
        return value.detach().to("cpu").float().numpy()
    return np.asarray(value)


def load_torch_checkpoint(path: str | os.PathLike, config: TRMConfig) -> Variables:
    """Loads an official ``torch.save(model.state_dict())`` file into our variables."""
    try:
        import torch  # noqa: PLC0415 - optional dependency, imported only here
    except ImportError as err:
        raise ImportError("loading a PyTorch checkpoint needs torch: pip install 'trm-jax[torch]'") from err
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"PyTorch checkpoint {path!r} does not exist")
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    return from_torch_state_dict(state_dict, config, source=path)


def save_torch_checkpoint(variables: Variables, path: str | os.PathLike) -> None:
    """Writes our variables as an official state_dict file (atomically)."""
    import torch  # noqa: PLC0415

    state = {k: torch.from_numpy(v) for k, v in to_torch_state_dict(variables).items()}
    atomic_write_with(path, lambda tmp: torch.save(state, tmp))
