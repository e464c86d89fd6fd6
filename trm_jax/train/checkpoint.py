"""Orbax checkpoints of the whole train state: async, keep-N, atomic, restored onto the current mesh.

A checkpoint directory holds one sub-directory per step, written by ``orbax.checkpoint`` into a
temporary directory and renamed into place only once complete, so a crash mid-save leaves the
previous steps intact (leftover temporary directories are ignored and cleaned up).

Each step stores three items:

- ``state``: the train-state pytree as orbax's ``StandardCheckpointHandler`` writes it: one array
  per leaf, named by the leaf's key path, with the tree's structure in orbax's metadata (tuples
  as lists, NamedTuples and dataclasses as dicts). Typed PRNG key arrays are stored as their
  ``jax.random.key_data`` (orbax 0.11 cannot write key arrays). Zero-size arrays (the ``[N, 0]``
  puzzle table of a model without puzzle embeddings), which orbax cannot write, are stored as
  empty nodes and restored as zeros.
- ``extras``: a JSON-able dict (data-loader position, config, metrics...).
- ``meta``: our format version, the PRNG key leaves' paths and implementations, the
  zero-size arrays' paths, shapes and dtypes, a checksum of every stored array
  (:mod:`trm_jax.train.checksum`) and the SHA-256 of the extras.

A restore compares every array and the extras with their checksums: garbled bytes that orbax
reads back without complaint (its OCDBT/zstd files are not checksummed on read) make the step
:class:`CheckpointDamagedError`, naming the array.

Format 2 had no checksums (its steps restore unchecked); format 1 differed from 2 only in
laying the state out as a nested dict keyed by the key-path names (``{"opt_state": {"0":
...}}``, the form ``restore`` without a target returns); :meth:`Checkpointer._read_v1` still
reads it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from typing import Any, Callable, Mapping, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp

from trm_jax.train.checkpoint_damage import CheckpointDamagedError, DamagedRead, guarded_read, json_object
from trm_jax.train.checksum import checksums

__all__ = ["Checkpointer", "CheckpointDamagedError", "CheckpointMismatchError"]

_FORMAT_VERSION = 3
_STATE, _EXTRAS, _META = "state", "extras", "meta"
_JSON_FILES = {_EXTRAS: "metadata", _META: "metadata"}  # the files JsonCheckpointHandler writes

Path = tuple[str, ...]
_T = TypeVar("_T")


class CheckpointMismatchError(ValueError):
    """The checkpoint's tree structure, shapes or dtypes differ from the restore target."""


def _is_key(dtype: Any) -> bool:
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _is_empty(leaf: Any) -> bool:
    return isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct, np.ndarray)) and np.prod(leaf.shape) == 0


def _names(keypath: Any) -> Path:
    """A jax key path as the names orbax gives it (dict key, attribute, sequence index)."""
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in keypath)


def _stored_leaf(leaf: Any) -> Any:
    """What orbax writes for one state leaf: None for zero-size arrays, key data for PRNG keys."""
    if _is_empty(leaf):
        return None
    if isinstance(leaf, jax.Array) and _is_key(leaf.dtype):
        return jax.random.key_data(leaf)
    if isinstance(leaf, np.generic):  # orbax 0.11 refuses numpy scalars
        return np.asarray(leaf)
    return leaf


def _key_data_sharding(sharding: jax.sharding.Sharding, extra_dims: int) -> jax.sharding.Sharding:
    """Sharding of a key array's raw data (the key's own trailing dims are not sharded)."""
    if isinstance(sharding, jax.sharding.NamedSharding):
        spec = jax.sharding.PartitionSpec(*sharding.spec, *[None] * extra_dims)
        return jax.sharding.NamedSharding(sharding.mesh, spec)
    if isinstance(sharding, jax.sharding.SingleDeviceSharding):
        return sharding
    raise TypeError(
        f"Checkpointer: cannot restore a PRNG key array with sharding {type(sharding).__name__}; "
        "use a NamedSharding or SingleDeviceSharding in the target"
    )


def _abstract_leaf(leaf: Any) -> Any:
    """What orbax should restore for one target leaf (None: a zero-size array, not stored)."""
    if _is_empty(leaf):
        return None
    if isinstance(leaf, np.generic):  # orbax restores numpy scalars as 0-d arrays
        return np.zeros((), leaf.dtype)
    if not isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct)):
        return leaf
    sharding = getattr(leaf, "sharding", None) or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    if _is_key(leaf.dtype):
        data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype))
        return jax.ShapeDtypeStruct(
            data.shape, data.dtype, sharding=_key_data_sharding(sharding, len(data.shape) - len(leaf.shape))
        )
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)


def _as_target_kind(prng_keys: Mapping[Path, str], keypath: Any, want: Any, got: Any) -> Any:
    """A restored leaf as the kind of its target leaf (zeros for a zero-size array, not stored)."""
    if got is None:
        zeros = np.zeros(want.shape, want.dtype)
        return zeros if isinstance(want, np.ndarray) else jax.device_put(zeros, getattr(want, "sharding", None))
    if isinstance(want, np.generic):
        return type(want)(np.asarray(got))
    if isinstance(want, (bool, int, float)):
        return type(want)(got)
    if _is_key(getattr(want, "dtype", None)):
        return jax.random.wrap_key_data(got, impl=prng_keys[_names(keypath)])
    return got


def _leaf_problems(name: str, leaf: Any, stored: Any, impl: str | None) -> list[str]:
    """How one stored array's metadata differs from its target leaf (``impl``: of a stored PRNG key)."""
    what = "shape"
    if _is_key(getattr(leaf, "dtype", None)):
        if impl is None:
            return [f"param {name} is a PRNG key in the target, not in the checkpoint"]
        if jax.eval_shape(lambda: jax.random.key(0, impl=impl)).dtype != leaf.dtype:
            return [f"param {name} holds PRNG keys of implementation {impl}, expected {leaf.dtype}"]
        leaf = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype))
        what = "PRNG key data shape"
    if tuple(stored.shape) != tuple(np.shape(leaf)):
        return [f"param {name} has {what} {tuple(stored.shape)}, expected {tuple(np.shape(leaf))}"]
    if np.dtype(stored.dtype) != np.dtype(leaf.dtype):
        return [f"param {name} has dtype {np.dtype(stored.dtype)}, expected {np.dtype(leaf.dtype)}"]
    return []


def _array_checksums(stored: Any) -> dict[str, str]:
    """Checksums of a stored state's arrays by their path (``a/b/c``)."""
    flat = ocp.tree.to_flat_dict(stored)
    return checksums({"/".join(path): leaf for path, leaf in flat.items() if isinstance(leaf, (jax.Array, np.ndarray))})


def _json_digest(value: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


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
            max_to_keep=max_to_keep, enable_async_checkpointing=async_save, cleanup_tmp_directories=True, create=True
        )
        handlers = {
            _STATE: ocp.StandardCheckpointHandler(),
            _EXTRAS: ocp.JsonCheckpointHandler(),
            _META: ocp.JsonCheckpointHandler(),
        }
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

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
        leaves = ocp.tree.to_flat_dict(state).items()
        stored = jax.tree.map(_stored_leaf, state)
        meta = {
            "format_version": _FORMAT_VERSION,
            "prng_keys": [
                {"path": list(path), "impl": str(jax.random.key_impl(leaf))}
                for path, leaf in leaves
                if isinstance(leaf, jax.Array) and _is_key(leaf.dtype)
            ],
            "empty_arrays": [
                {"path": list(path), "shape": list(leaf.shape), "dtype": str(np.dtype(leaf.dtype))}
                for path, leaf in leaves
                if _is_empty(leaf)
            ],
            "checksums": _array_checksums(stored),
            "extras_sha256": _json_digest(extras),
        }
        items = {
            _STATE: ocp.args.StandardSave(stored),
            _EXTRAS: ocp.args.JsonSave(extras),
            _META: ocp.args.JsonSave(meta),
        }
        return self._manager.save(int(step), args=ocp.args.Composite(**items), force=force)

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
        Without ``target`` the state comes back as a nested dict keyed by the key-path names.
        """
        step = self._resolve_step(step)
        self._check_items(step)
        meta = self._guarded(
            step, lambda: self._manager.restore(step, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()}))[_META]
        )
        if not isinstance(meta, Mapping):
            raise self.damaged(step, f"{_META}/ holds {type(meta).__name__}, expected a JSON object")
        prng_keys = {tuple(e["path"]): e["impl"] for e in meta.get("prng_keys", [])}
        empty = {tuple(e["path"]): (tuple(e["shape"]), np.dtype(e["dtype"])) for e in meta.get("empty_arrays", [])}
        if target is not None:
            self._check_matches(step, target, prng_keys, empty)
        abstract = None if target is None else jax.tree.map(_abstract_leaf, target)
        read = self._read_v1 if meta.get("format_version") == 1 else self._read
        state, extras = read(step, abstract)
        self._verify(step, meta, state, extras)
        if target is not None:
            as_target = functools.partial(_as_target_kind, prng_keys)
            return jax.tree_util.tree_map_with_path(as_target, target, state), extras
        flat = ocp.tree.to_flat_dict(state)
        flat.update({path: jax.random.wrap_key_data(flat[path], impl=impl) for path, impl in prng_keys.items()})
        flat.update({path: np.zeros(shape, dtype) for path, (shape, dtype) in empty.items()})
        return ocp.tree.from_flat_dict(flat), extras

    def _read(self, step: int, abstract: Any) -> tuple[Any, dict]:
        """The state item restored onto ``abstract`` (None: as laid out on disk), and the extras."""
        items = {_STATE: ocp.args.StandardRestore(abstract), _EXTRAS: ocp.args.JsonRestore()}
        restored = self._guarded(step, lambda: self._manager.restore(step, args=ocp.args.Composite(**items)))
        extras = restored[_EXTRAS]
        if extras is not None and not isinstance(extras, Mapping):
            raise self.damaged(step, f"{_EXTRAS}/ holds {type(extras).__name__}, expected a JSON object")
        return restored[_STATE], dict(extras or {})

    def _read_v1(self, step: int, abstract: Any) -> tuple[Any, dict]:
        """:meth:`_read` of a format-1 step, whose state is a nested dict keyed by key-path names."""
        if abstract is None:
            return self._read(step, None)
        state, extras = self._read(step, ocp.tree.from_flat_dict(ocp.tree.to_flat_dict(abstract)))
        return ocp.tree.from_flat_dict(ocp.tree.to_flat_dict(state), target=abstract), extras

    def _check_matches(
        self,
        step: int,
        target: Any,
        prng_keys: Mapping[Path, str],
        empty: Mapping[Path, tuple[tuple[int, ...], np.dtype]],
    ) -> None:
        """Raises :class:`CheckpointMismatchError` naming up to three paths whose leaves differ."""
        tree = self._guarded(step, lambda: self._manager.item_metadata(step)[_STATE])
        on_disk = ocp.tree.to_flat_dict(tree.tree)
        on_disk.update({path: jax.ShapeDtypeStruct(shape, dtype) for path, (shape, dtype) in empty.items()})
        wanted = ocp.tree.to_flat_dict(target)
        problems = []
        for path, leaf in wanted.items():
            stored = on_disk.get(path)
            if stored is None:
                problems.append(f"param {'/'.join(path)} is missing from the checkpoint")
            elif not (isinstance(leaf, (bool, int, float)) or isinstance(stored, ocp.metadata.ScalarMetadata)):
                # Python scalars are stored with orbax's own 64-bit dtype: only kinds matter.
                problems.extend(_leaf_problems("/".join(path), leaf, stored, prng_keys.get(path)))
        problems += [
            f"param {'/'.join(path)} is in the checkpoint but not in the target"
            for path in on_disk
            if path not in wanted
        ]
        if problems:
            more = f" (and {len(problems) - 3} more differences)" if len(problems) > 3 else ""
            raise CheckpointMismatchError(
                f"checkpoint at {self.directory} step {step} was written by a different "
                f"architecture: {'; '.join(problems[:3])}{more}"
            )

    def _verify(self, step: int, meta: Mapping[str, Any], state: Any, extras: Mapping[str, Any]) -> None:
        """Raises :class:`CheckpointDamagedError` naming the first array (or the extras) whose
        checksum differs from the one saved with it (format 3; older steps have none)."""
        expected = meta.get("checksums")
        if expected is None:
            return
        if not isinstance(expected, Mapping):
            raise self.damaged(step, f"{_META}/ holds checksums of type {type(expected).__name__}, expected an object")
        got = _array_checksums(state)
        for name in sorted(expected):
            if expected[name] != got.get(name):
                raise self.damaged(
                    step,
                    f"array {name} does not match the checksum it was saved with "
                    f"(saved {expected.get(name)}, read {got.get(name)})",
                )
        if meta.get("extras_sha256") != _json_digest(extras):
            raise self.damaged(step, f"{_EXTRAS}/ does not match the checksum it was saved with")

    # ------------------------------------------------------------------------- damaged steps
    def _step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def _looks_intact(self, step: int) -> bool:
        """A quick check: every item directory exists and the JSON items parse as objects."""
        step_dir = self._step_dir(step)
        if not all(os.path.isdir(os.path.join(step_dir, item)) for item in (_STATE, _EXTRAS, _META)):
            return False
        return all(
            json_object(os.path.join(step_dir, item, name))
            for item, name in _JSON_FILES.items()
            if os.path.exists(os.path.join(step_dir, item, name))
        )

    def damaged(self, step: int, reason: str) -> CheckpointDamagedError:
        """The error for a damaged ``step`` (``reason``: what could not be read), listing intact older steps."""
        intact = [s for s in self.all_steps() if s < step and self._looks_intact(s)]
        return CheckpointDamagedError(self.directory, step, reason, intact)

    def _check_items(self, step: int) -> None:
        missing = [
            f"{item}/"
            for item in (_STATE, _EXTRAS, _META)
            if not os.path.isdir(os.path.join(self._step_dir(step), item))
        ]
        if missing:
            raise self.damaged(
                step,
                f"its item director{'ies' if len(missing) > 1 else 'y'} "
                f"{', '.join(missing)} {'are' if len(missing) > 1 else 'is'} missing",
            )

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

    # ---------------------------------------------------------------------------------- closing
    def close(self) -> None:
        """Waits for pending saves and releases orbax's resources."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
