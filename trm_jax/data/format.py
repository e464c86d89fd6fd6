"""The on-disk puzzle dataset format shared by every builder and the loader.

A dataset directory, interchangeable with what the official ``dataset/build_*_dataset.py``
scripts write::

    DIR/identifiers.json                      list: puzzle identifier id -> name ("<blank>" = 0)
    DIR/{split}/dataset.json                  DatasetMetadata (split is "train" or "test")
    DIR/{split}/{set}__inputs.npy             [num_examples, seq_len] token ids (uint8)
    DIR/{split}/{set}__labels.npy             [num_examples, seq_len] token ids (uint8)
    DIR/{split}/{set}__puzzle_identifiers.npy [num_puzzles] int32, one id per puzzle
    DIR/{split}/{set}__puzzle_indices.npy     [num_puzzles + 1] int32, example offsets, starts at 0
    DIR/{split}/{set}__group_indices.npy      [num_groups + 1] int32, puzzle offsets, starts at 0
    DIR/<extra>.json                          e.g. ARC's test_puzzles.json (``extra_json``)

Vocabulary: an *example* is one (input, label) pair; a *puzzle* is a run of consecutive
examples sharing a puzzle identifier; a *group* is a run of consecutive puzzles (a puzzle and
its augmentations). Puzzle ``p`` owns examples ``puzzle_indices[p]:puzzle_indices[p+1]``;
group ``g`` owns puzzles ``group_indices[g]:group_indices[g+1]``.

API for builders (the ARC builder uses the same one):

* :mod:`trm_jax.data.builder` (``PuzzleBuilder``, ``make_metadata``) accumulates
  examples/puzzles/groups into :class:`SplitArrays` and computes the metadata totals.
* :func:`write_dataset` writes everything atomically (temp dir next to ``out_dir`` then
  rename; on any error nothing is left at ``out_dir``).
* :func:`read_metadata`, :func:`load_split`, :func:`read_identifiers` read it back with
  errors naming the file and the problem (:class:`DatasetFormatError`).

The official CSV sources the Sudoku and maze builders read are in :mod:`trm_jax.data.csv_source`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from trm_jax.fileio import make_temp_dir, read_json
from trm_jax.signals import raise_if_interrupted

FIELDS: tuple[str, ...] = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
TOKEN_FIELDS: tuple[str, ...] = ("inputs", "labels")
INDEX_FIELDS: tuple[str, ...] = ("puzzle_identifiers", "puzzle_indices", "group_indices")
SPLITS: tuple[str, ...] = ("train", "test")
BLANK_IDENTIFIER_NAME = "<blank>"


class OutputExistsError(FileExistsError):
    """The output directory of a dataset builder already exists (and overwrite was not asked)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        super().__init__(f"{self.path}: output directory already exists (pass overwrite=True to replace it)")


class DatasetFormatError(ValueError):
    """A dataset directory, .npy/.json file or source CSV does not have the expected form."""


# ----------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class DatasetMetadata:
    """Contents of ``{split}/dataset.json`` (exactly the official fields)."""

    pad_id: int
    ignore_label_id: int | None
    blank_identifier_id: int
    vocab_size: int
    seq_len: int
    num_puzzle_identifiers: int
    total_groups: int
    mean_puzzle_examples: float
    total_puzzles: int
    sets: list[str]

    def to_json_dict(self) -> dict[str, object]:
        """The JSON object written to ``dataset.json``."""
        d = dataclasses.asdict(self)
        d["mean_puzzle_examples"] = float(self.mean_puzzle_examples)
        d["sets"] = list(self.sets)
        return d

    @classmethod
    def from_json_dict(cls, d: Mapping[str, object], source: str = "dataset.json") -> "DatasetMetadata":
        """Validate and convert a parsed ``dataset.json`` object; errors name ``source`` and the field."""
        if not isinstance(d, Mapping):
            raise DatasetFormatError(f"{source}: expected a JSON object, got {type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in d]
        if missing:
            raise DatasetFormatError(f"{source}: missing field(s) {missing}")
        values: dict[str, object] = {}
        for name in names:
            v = d[name]
            if name == "ignore_label_id":
                ok = v is None or (isinstance(v, int) and not isinstance(v, bool))
            elif name == "mean_puzzle_examples":
                ok = isinstance(v, (int, float)) and not isinstance(v, bool)
                v = float(v) if ok else v  # type: ignore[arg-type]
            elif name == "sets":
                ok = isinstance(v, list) and len(v) > 0 and all(isinstance(s, str) and s for s in v)
            else:
                ok = isinstance(v, int) and not isinstance(v, bool)
            if not ok:
                raise DatasetFormatError(f"{source}: field {name!r} has invalid value {v!r}")
            values[name] = v
        for name in ("vocab_size", "seq_len", "num_puzzle_identifiers"):
            if values[name] <= 0:  # type: ignore[operator]
                raise DatasetFormatError(f"{source}: field {name!r} must be positive, got {values[name]}")
        return cls(**values)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- arrays


@dataclass
class SplitArrays:
    """The five arrays of one set of one split (see the module docstring for shapes/dtypes)."""

    inputs: np.ndarray
    labels: np.ndarray
    puzzle_identifiers: np.ndarray
    puzzle_indices: np.ndarray
    group_indices: np.ndarray

    @property
    def num_examples(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def num_puzzles(self) -> int:
        return int(self.puzzle_identifiers.shape[0])

    @property
    def num_groups(self) -> int:
        return int(self.group_indices.shape[0]) - 1

    def as_dict(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in FIELDS}

    def validate(self, seq_len: int | None = None, where: str = "set") -> None:
        """Check shapes, dtypes and index bookkeeping; raise DatasetFormatError naming ``where``."""
        for name in FIELDS:
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or not np.issubdtype(arr.dtype, np.integer):
                raise DatasetFormatError(f"{where}: {name} must be an integer numpy array")
        for name in TOKEN_FIELDS:
            arr = getattr(self, name)
            if arr.ndim != 2:
                raise DatasetFormatError(f"{where}: {name} must be 2-D [examples, seq_len], got shape {arr.shape}")
            if seq_len is not None and arr.shape[1] != seq_len:
                raise DatasetFormatError(f"{where}: {name} has seq_len {arr.shape[1]}, metadata says {seq_len}")
        if self.inputs.shape != self.labels.shape:
            raise DatasetFormatError(
                f"{where}: inputs {self.inputs.shape} and labels {self.labels.shape} differ in shape"
            )
        for name in INDEX_FIELDS:
            if getattr(self, name).ndim != 1:
                raise DatasetFormatError(f"{where}: {name} must be 1-D")
        pi, gi = self.puzzle_indices, self.group_indices
        if pi.shape[0] != self.num_puzzles + 1:
            raise DatasetFormatError(
                f"{where}: puzzle_indices has {pi.shape[0]} entries, expected num_puzzles + 1 = {self.num_puzzles + 1}"
            )
        if gi.shape[0] < 1:
            raise DatasetFormatError(f"{where}: group_indices is empty (must start with 0)")
        if pi[0] != 0 or pi[-1] != self.num_examples or np.any(np.diff(pi) <= 0):
            raise DatasetFormatError(
                f"{where}: puzzle_indices must start at 0, strictly increase and end at "
                f"num_examples={self.num_examples}"
            )
        if gi[0] != 0 or gi[-1] != self.num_puzzles or np.any(np.diff(gi) <= 0):
            raise DatasetFormatError(
                f"{where}: group_indices must start at 0, strictly increase and end at num_puzzles={self.num_puzzles}"
            )


# ----------------------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_output_dir(out_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temp directory next to ``out_dir``; on success rename it to ``out_dir``.

    On any exception the temp directory is removed and ``out_dir`` is untouched. If ``out_dir``
    exists, raise :class:`OutputExistsError` unless ``overwrite`` (then it is replaced after success).
    """
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise OutputExistsError(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out.parent, f".{out.name}.tmp-")
    try:
        yield tmp
        raise_if_interrupted()  # a SIGINT/SIGTERM whose exception was swallowed: commit nothing
        if out.exists():
            if not overwrite:
                raise FileExistsError(f"{out}: output directory appeared while building")
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / "d")
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_dataset(
    out_dir: str | os.PathLike,
    splits: Mapping[str, Mapping[str, SplitArrays]],
    metadata: Mapping[str, DatasetMetadata],
    identifiers: Sequence[str],
    extra_json: Mapping[str, object] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a dataset directory atomically.

    splits: split name ("train"/"test") -> set name -> arrays. metadata: split name -> metadata
    (its ``sets`` must list the split's set names in order). identifiers: id -> name, written to
    identifiers.json. extra_json: file stem -> JSON-able object, written to ``out_dir/<stem>.json``
    (ARC's ``test_puzzles``). Everything is validated before anything becomes visible.
    """
    if set(splits) != set(metadata):
        raise ValueError(f"write_dataset: splits {sorted(splits)} and metadata {sorted(metadata)} differ")
    for split, sets in splits.items():
        meta = metadata[split]
        if list(sets.keys()) != list(meta.sets):
            raise ValueError(f"write_dataset: split {split!r} has sets {list(sets)}, metadata lists {meta.sets}")
        if len(identifiers) != meta.num_puzzle_identifiers:
            raise ValueError(
                f"write_dataset: {len(identifiers)} identifiers but num_puzzle_identifiers="
                f"{meta.num_puzzle_identifiers}"
            )
        for set_name, arrays in sets.items():
            arrays.validate(meta.seq_len, where=f"{split}/{set_name}")
            if arrays.num_puzzles and int(arrays.puzzle_identifiers.max()) >= meta.num_puzzle_identifiers:
                raise ValueError(
                    f"write_dataset: {split}/{set_name} uses a puzzle identifier >= "
                    f"num_puzzle_identifiers={meta.num_puzzle_identifiers}"
                )
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        for split, sets in splits.items():
            split_dir = tmp / split
            split_dir.mkdir()
            for set_name, arrays in sets.items():
                for name, arr in arrays.as_dict().items():
                    np.save(split_dir / f"{set_name}__{name}.npy", arr)
            _write_json(split_dir / "dataset.json", metadata[split].to_json_dict())
        _write_json(tmp / "identifiers.json", list(identifiers))
        for stem, obj in (extra_json or {}).items():
            _write_json(tmp / f"{stem}.json", obj)
    return Path(out_dir)


def _write_json(path: Path, obj: object) -> None:
    with open(path, "w") as f:  # inside the temporary dataset directory: atomic as a whole
        json.dump(obj, f)


# ----------------------------------------------------------------------------- reading


def read_metadata(split_dir: str | os.PathLike) -> DatasetMetadata:
    """Read and validate ``split_dir/dataset.json``."""
    path = Path(split_dir) / "dataset.json"
    d = read_json(path, DatasetFormatError, "a dataset split directory's metadata")
    return DatasetMetadata.from_json_dict(d, source=str(path))


def read_identifiers(dataset_dir: str | os.PathLike) -> list[str]:
    """Read ``dataset_dir/identifiers.json`` (id -> puzzle name)."""
    path = Path(dataset_dir) / "identifiers.json"
    ids = read_json(path, DatasetFormatError, "the list of puzzle identifiers")
    if not isinstance(ids, list) or not all(isinstance(s, str) for s in ids):
        raise DatasetFormatError(f"{path}: expected a JSON list of strings")
    return ids


def load_npy(path: str | os.PathLike, mmap: bool = True) -> np.ndarray:
    """Load one .npy, checking first that the file holds as many bytes as its header promises."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"{path}: missing")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise DatasetFormatError(f"{path}: unsupported .npy version {version}")
            data_start = f.tell()
    except DatasetFormatError:
        raise
    except Exception as e:  # numpy raises ValueError/EOFError on a damaged header
        raise DatasetFormatError(f"{path}: not a valid .npy file ({e})") from e
    if dtype.hasobject:
        raise DatasetFormatError(f"{path}: object arrays are not allowed")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = path.stat().st_size - data_start
    if actual < expected:
        raise DatasetFormatError(
            f"{path}: truncated: header promises shape {shape} {dtype} ({expected} bytes), file has {actual}"
        )
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as e:
        raise DatasetFormatError(f"{path}: could not be read ({e})") from e


def load_split(
    split_dir: str | os.PathLike, set_name: str, mmap: bool = True, metadata: DatasetMetadata | None = None
) -> SplitArrays:
    """Load one set of a split: inputs/labels memory-mapped (if ``mmap``), index arrays in memory.

    The arrays are validated against each other (and against ``metadata.seq_len`` if given).
    """
    split_dir = Path(split_dir)
    arrays = {}
    for name in FIELDS:
        arrays[name] = load_npy(split_dir / f"{set_name}__{name}.npy", mmap=mmap and name in TOKEN_FIELDS)
    result = SplitArrays(**arrays)
    result.validate(metadata.seq_len if metadata is not None else None, where=f"{split_dir}/{set_name}__*.npy")
    return result
