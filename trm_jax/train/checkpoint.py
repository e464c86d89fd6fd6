"""Orbax checkpoints of the whole train state: async, keep-N, atomic, restored onto the current mesh.

A checkpoint directory holds one sub-directory per step, written by ``orbax.checkpoint`` into a
temporary directory and renamed into place only once complete, so a crash mid-save leaves the
previous steps intact (leftover temporary directories are ignored and cleaned up).

Each step stores three items:

- ``state``: the train-state pytree, stored as a nested dict keyed by the pytree's key paths (so
  any pytree of arrays works: dicts, NamedTuples, dataclasses, optax states). Typed PRNG key
  arrays are stored as their ``jax.random.key_data`` and wrapped back on restore.
- ``extras``: a JSON-able dict (data-loader position, config, metrics...).
- ``meta``: our format version and which leaves were PRNG keys (with their implementation).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping, Sequence, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp

from trm_jax.train.checkpoint_damage import CheckpointDamagedError, DamagedRead, guarded_read, json_object

__all__ = ["Checkpointer", "CheckpointDamagedError", "CheckpointMismatchError"]

_FORMAT_VERSION = 1
_STATE, _EXTRAS, _META = "state", "extras", "meta"

Path = tuple[str, ...]
_T = TypeVar("_T")


class CheckpointMismatchError(ValueError):
    """The checkpoint's tree structure, shapes or dtypes differ from the restore target."""


_JSON_FILES = {_EXTRAS: "metadata", _META: "metadata"}  # the files JsonCheckpointHandler writes


def _key_name(key: Any) -> str:
    """The name of one step of a jax key path (dict key, attribute, sequence index)."""
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _flatten(tree: Any) -> tuple[list[tuple[Path, Any]], Any]:
    """Leaves of ``tree`` with their key paths as tuples of strings, and the treedef."""
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    pairs = [(tuple(_key_name(k) for k in path), leaf) for path, leaf in with_paths]
    seen: set[Path] = set()
    for path, _ in pairs:
        if path in seen:
            raise ValueError(f"Checkpointer: two leaves share the key path {_show(path)}")
        seen.add(path)
    return pairs, treedef


def _nest(pairs: Sequence[tuple[Path, Any]]) -> dict:
    """Nested dict ``{k0: {k1: leaf}}`` from ``(path, leaf)`` pairs."""
    root: dict = {}
    for path, leaf in pairs:
        node = root
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = leaf
    return root


def _flatten_nested(nested: Any, prefix: Path = ()) -> dict[Path, Any]:
    """Inverse of :func:`_nest`: ``{path: leaf}`` of a nested dict."""
    if isinstance(nested, Mapping):
        out: dict[Path, Any] = {}
        for name, value in nested.items():
            out.update(_flatten_nested(value, prefix + (str(name),)))
        return out
    return {prefix: nested}


def _show(path: Path) -> str:
    return "/".join(path) if path else "<root>"


def _is_key_dtype(dtype: Any) -> bool:
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _key_data_sharding(sharding: jax.sharding.Sharding | None, extra_dims: int):
    """Sharding of a key array's raw data (the key's own trailing dims are not sharded)."""
    if sharding is None or isinstance(sharding, jax.sharding.SingleDeviceSharding):
        return sharding
    if isinstance(sharding, jax.sharding.NamedSharding):
        spec = tuple(sharding.spec) + (None,) * extra_dims
        return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*spec))
    raise TypeError(
        f"Checkpointer: cannot restore a PRNG key array with sharding {type(sharding).__name__}; "
        "use a NamedSharding or SingleDeviceSharding in the target"
    )


class Checkpointer:
    """Saves and restores whole train states under ``directory`` (one sub-directory per step).

    ``max_to_keep`` most recent steps are kept (None keeps all). Saves are asynchronous unless
    ``async_save=False``: :meth:`save` returns once the arrays are copied off the devices, so the
    state may be donated right after; call :meth:`wait_until_finished` (or :meth:`close`) before
    relying on the files.
    """

    def __init__(self, directory: str | os.PathLike, max_to_keep: int | None = 3, async_save: bool = True):
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"Checkpointer: max_to_keep must be >= 1 or None, got {max_to_keep}")
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
            create=True,
        )
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={
                _STATE: ocp.StandardCheckpointHandler(),
                _EXTRAS: ocp.JsonCheckpointHandler(),
                _META: ocp.JsonCheckpointHandler(),
            },
        )

    # ----------------------------------------------------------------------------------- saving
    def save(self, step: int, state: Any, extras: Mapping[str, Any] | None = None, force: bool = False) -> bool:
        """Starts saving ``state`` (any pytree of arrays / numpy values / Python scalars) at ``step``.

        ``extras`` must be JSON-serialisable. Returns whether a save was started (orbax may skip
        steps according to its save policy unless ``force``). Raises if ``step`` already exists.
        """
        extras = dict(extras or {})
        try:
            json.dumps(extras)
        except TypeError as err:
            raise TypeError(f"Checkpointer.save: extras must be JSON-serialisable ({err})") from err

        pairs, _ = _flatten(state)
        stored, prng_keys, empty = [], {}, []
        for path, leaf in pairs:
            if isinstance(leaf, (jax.Array, np.ndarray)) and leaf.size == 0:
                # orbax cannot write zero-size arrays (e.g. the [N, 0] puzzle table of a model
                # without puzzle embeddings): their shape and dtype go to the metadata instead.
                empty.append({"path": list(path), "shape": list(leaf.shape),
                              "dtype": str(np.dtype(leaf.dtype))})
                continue
            if isinstance(leaf, jax.Array) and _is_key_dtype(leaf.dtype):
                prng_keys[path] = str(jax.random.key_impl(leaf))
                leaf = jax.random.key_data(leaf)
            elif not isinstance(leaf, (jax.Array, np.ndarray, np.generic, int, float, bool)):
                raise TypeError(
                    f"Checkpointer.save: leaf {_show(path)} has unsupported type {type(leaf).__name__}; "
                    "expected an array or a numeric scalar"
                )
            stored.append((path, leaf))
        meta = {
            "format_version": _FORMAT_VERSION,
            "prng_keys": [{"path": list(path), "impl": impl} for path, impl in prng_keys.items()],
            "empty_arrays": empty,
        }
        return self._manager.save(
            int(step),
            args=ocp.args.Composite(
                **{
                    _STATE: ocp.args.StandardSave(_nest(stored)),
                    _EXTRAS: ocp.args.JsonSave(extras),
                    _META: ocp.args.JsonSave(meta),
                }
            ),
            force=force,
        )

    def wait_until_finished(self) -> None:
        """Blocks until every started save is committed to disk."""
        self._manager.wait_until_finished()

    # ---------------------------------------------------------------------------------- queries
    def latest_step(self) -> int | None:
        """The newest committed step, or None if the directory holds no checkpoint."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """All committed steps, ascending."""
        return sorted(self._manager.all_steps())

    # -------------------------------------------------------------------------------- restoring
    def restore(self, step: int | None = None, target: Any = None) -> tuple[Any, dict]:
        """Restores ``(state, extras)`` of ``step`` (default: the latest).

        Raises :class:`CheckpointDamagedError` (naming the step and the older steps that look
        intact) when the step's files are missing, truncated or garbled.

        ``target`` is a pytree like the saved state whose leaves say what to restore:
        ``jax.ShapeDtypeStruct`` (with ``.sharding``, e.g. ``jax.eval_shape`` output with the
        current mesh's shardings; without one, the first local device) or ``jax.Array`` restore
        as jax arrays laid out on that sharding; numpy arrays / scalars and Python scalars restore
        as the same kind. Typed PRNG key leaves are restored as key arrays. Raises
        :class:`CheckpointMismatchError` if paths, shapes or dtypes differ from the checkpoint.
        Without ``target`` the state comes back as a nested dict as laid out on disk.
        """
        step = self._resolve_step(step)
        self._check_items(step)
        meta = self._guarded(step, lambda: self._manager.restore(
            step, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()}))[_META])
        if not isinstance(meta, Mapping):
            raise self.damaged(step, f"{_META}/ holds {type(meta).__name__}, expected a JSON object")
        prng_keys = {tuple(entry["path"]): entry["impl"] for entry in meta.get("prng_keys", [])}
        empty = {tuple(e["path"]): (tuple(e["shape"]), np.dtype(e["dtype"]))
                 for e in meta.get("empty_arrays", [])}

        if target is None:
            restored = self._guarded(step, lambda: self._manager.restore(
                step,
                args=ocp.args.Composite(
                    **{_STATE: ocp.args.StandardRestore(None), _EXTRAS: ocp.args.JsonRestore()}
                ),
            ))
            self._check_extras(step, restored[_EXTRAS])
            flat = _flatten_nested(restored[_STATE])
            for path, impl in prng_keys.items():
                flat[path] = jax.random.wrap_key_data(flat[path], impl=impl)
            for path, (shape, dtype) in empty.items():
                flat[path] = np.zeros(shape, dtype)
            return _nest(list(flat.items())), dict(restored[_EXTRAS] or {})

        all_pairs, treedef = _flatten(target)
        on_disk = _flatten_nested(self._guarded(step, lambda: self._manager.item_metadata(step)[_STATE].tree))
        on_disk.update({path: jax.ShapeDtypeStruct(shape, dtype) for path, (shape, dtype) in empty.items()})
        try:
            abstract = [(path, self._abstract_leaf(path, leaf, prng_keys)) for path, leaf in all_pairs]
        except CheckpointMismatchError as err:
            raise CheckpointMismatchError(
                f"checkpoint at {self.directory} step {step} was written by a different architecture: {err}"
            ) from None
        self._check_matches(step, abstract, on_disk, prng_keys)

        restored = self._guarded(step, lambda: self._manager.restore(
            step,
            args=ocp.args.Composite(
                **{_STATE: ocp.args.StandardRestore(_nest([(path, leaf) for path, leaf in abstract
                                                           if path not in empty])),
                   _EXTRAS: ocp.args.JsonRestore()}
            ),
        ))
        self._check_extras(step, restored[_EXTRAS])
        flat = _flatten_nested(restored[_STATE])
        leaves = []
        for path, leaf in all_pairs:
            if path in empty:
                sharding = getattr(leaf, "sharding", None)
                value = (np.zeros(leaf.shape, leaf.dtype) if isinstance(leaf, np.ndarray)
                         else jax.device_put(np.zeros(leaf.shape, leaf.dtype), sharding))
                leaves.append(value)
                continue
            value = flat[path]
            if path in prng_keys:
                value = jax.random.wrap_key_data(value, impl=prng_keys[path])
            elif isinstance(leaf, np.generic):
                value = type(leaf)(np.asarray(value))
            elif isinstance(leaf, (bool, int, float)):
                value = type(leaf)(value)
            leaves.append(value)
        return jax.tree_util.tree_unflatten(treedef, leaves), dict(restored[_EXTRAS] or {})

    # ------------------------------------------------------------------------- damaged steps
    def _step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def _looks_intact(self, step: int) -> bool:
        """A quick check: every item directory exists and the JSON items parse as objects."""
        step_dir = self._step_dir(step)
        if not all(os.path.isdir(os.path.join(step_dir, item)) for item in (_STATE, _EXTRAS, _META)):
            return False
        return all(json_object(os.path.join(step_dir, item, name)) for item, name in _JSON_FILES.items()
                   if os.path.exists(os.path.join(step_dir, item, name)))

    def damaged(self, step: int, reason: str) -> CheckpointDamagedError:
        """The error for a damaged ``step`` (``reason``: what could not be read), listing intact older steps."""
        intact = [s for s in self.all_steps() if s < step and self._looks_intact(s)]
        return CheckpointDamagedError(self.directory, step, reason, intact)

    def _check_items(self, step: int) -> None:
        missing = [f"{item}/" for item in (_STATE, _EXTRAS, _META)
                   if not os.path.isdir(os.path.join(self._step_dir(step), item))]
        if missing:
            raise self.damaged(step, f"its item director{'ies' if len(missing) > 1 else 'y'} "
                                      f"{', '.join(missing)} {'are' if len(missing) > 1 else 'is'} missing")

    def _check_extras(self, step: int, extras: Any) -> None:
        if extras is not None and not isinstance(extras, Mapping):
            raise self.damaged(step, f"{_EXTRAS}/ holds {type(extras).__name__}, expected a JSON object")

    def _guarded(self, step: int, read: Callable[[], _T]) -> _T:
        """``read()``; damaged files raise :class:`CheckpointDamagedError` naming ``step``."""
        try:
            return guarded_read(read)
        except DamagedRead as err:
            raise self.damaged(step, err.reason) from None

    def _resolve_step(self, step: int | None) -> int:
        steps = self.all_steps()
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        if step is None:
            return steps[-1]
        if int(step) not in steps:
            raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory} (available: {steps})")
        return int(step)

    @staticmethod
    def _abstract_leaf(path: Path, leaf: Any, prng_keys: Mapping[Path, str]) -> Any:
        """What orbax should restore for one target leaf (key arrays become their raw data)."""
        if isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct)):
            sharding = getattr(leaf, "sharding", None)
            if _is_key_dtype(leaf.dtype):
                impl = prng_keys.get(path)
                if impl is None:
                    raise CheckpointMismatchError(f"param {_show(path)} is a PRNG key in the target, not in the checkpoint")
                data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype))
                if jax.eval_shape(lambda: jax.random.wrap_key_data(jax.numpy.zeros(data.shape, data.dtype), impl=impl)).dtype != leaf.dtype:
                    raise CheckpointMismatchError(
                        f"param {_show(path)} holds PRNG keys of implementation {impl}, expected {leaf.dtype}"
                    )
                sharding = _key_data_sharding(sharding, len(data.shape) - len(leaf.shape))
                shape, dtype = data.shape, data.dtype
            else:
                shape, dtype = leaf.shape, leaf.dtype
            if sharding is None:
                sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
        if isinstance(leaf, np.ndarray):
            return np.zeros(leaf.shape, leaf.dtype)
        if isinstance(leaf, np.generic):
            return np.zeros((), leaf.dtype)
        if isinstance(leaf, (bool, int, float)):
            return leaf
        raise TypeError(f"Checkpointer.restore: target leaf {_show(path)} has unsupported type {type(leaf).__name__}")

    def _check_matches(
        self, step: int, abstract: Sequence[tuple[Path, Any]], on_disk: Mapping[Path, Any], prng_keys: Mapping[Path, str]
    ) -> None:
        problems = []
        wanted = dict(abstract)
        for path, leaf in abstract:
            name = _show(path)
            if path not in on_disk:
                problems.append(f"param {name} is missing from the checkpoint")
                continue
            stored = on_disk[path]
            if isinstance(leaf, (bool, int, float)) or isinstance(stored, ocp.metadata.ScalarMetadata):
                continue  # Python scalars are stored with orbax's own 64-bit dtype: only kinds matter
            stored_shape = tuple(stored.shape)
            expected_shape = tuple(np.shape(leaf))
            if stored_shape != expected_shape:
                what = "PRNG key data shape" if path in prng_keys else "shape"
                problems.append(f"param {name} has {what} {stored_shape}, expected {expected_shape}")
            elif np.dtype(stored.dtype) != np.dtype(leaf.dtype):
                problems.append(f"param {name} has dtype {np.dtype(stored.dtype)}, expected {np.dtype(leaf.dtype)}")
        for path in on_disk:
            if path not in wanted:
                problems.append(f"param {_show(path)} is in the checkpoint but not in the target")
        if problems:
            more = f" (and {len(problems) - 3} more differences)" if len(problems) > 3 else ""
            raise CheckpointMismatchError(
                f"checkpoint at {self.directory} step {step} was written by a different architecture: "
                + "; ".join(problems[:3])
                + more
            )

    # ---------------------------------------------------------------------------------- closing
    def close(self) -> None:
        """Waits for pending saves and releases orbax's resources."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
