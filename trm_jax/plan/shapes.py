"""The dataset fields a plan needs (sequence length, vocabulary, puzzle-table size), without
the dataset: from a built dataset when there is one, else from what the config's dataset is
known to hold.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import ml_collections

from trm_jax.data.format import DatasetFormatError, read_metadata
from trm_jax.plan.targets import PlanError


@dataclasses.dataclass(frozen=True)
class DatasetShape:
    seq_len: int
    vocab_size: int
    num_puzzle_identifiers: int
    source: str  # where the figures come from, for the report


def _arc_identifiers_upper_bound(puzzles: int) -> int:
    # Each puzzle with at most 1000 augmentations + the original, + the blank id. The built
    # dataset has slightly fewer after de-duplication.
    return puzzles * 1001 + 1


# ARC-AGI-1 with concept: 400 training + 400 evaluation + 160 concept puzzles (the Kaggle
# "combined" files); ARC-AGI-2: 1000 training2 + 120 evaluation2 + 160 concept.
ARC1_PUZZLE_IDENTIFIERS_UPPER_BOUND = _arc_identifiers_upper_bound(960)
ARC2_PUZZLE_IDENTIFIERS_UPPER_BOUND = _arc_identifiers_upper_bound(1280)

# The datasets the paper configs name in data.dataset_dir (their `trm-jax data` commands).
PAPER_DATASETS: dict[str, DatasetShape] = {
    "sudoku-extreme-1k-aug-1000": DatasetShape(81, 11, 1, "Sudoku-Extreme (81 cells, 11 tokens)"),
    "maze-30x30-hard-1k": DatasetShape(900, 6, 1, "Maze-Hard 30x30 (900 cells, 6 tokens)"),
    "arc1concept-aug-1000": DatasetShape(
        900,
        12,
        ARC1_PUZZLE_IDENTIFIERS_UPPER_BOUND,
        "ARC-AGI-1 + concept, 1000 augmentations (puzzle ids: upper bound)",
    ),
    "arc2concept-aug-1000": DatasetShape(
        900,
        12,
        ARC2_PUZZLE_IDENTIFIERS_UPPER_BOUND,
        "ARC-AGI-2 + concept, 1000 augmentations (puzzle ids: upper bound)",
    ),
}
# What the built-in generators write (data.generate.kind).
GENERATED: dict[str, DatasetShape] = {
    "sudoku": DatasetShape(81, 11, 1, "generated Sudoku"),
    "maze": DatasetShape(900, 6, 1, "generated mazes"),
}


def dataset_shape(config: ml_collections.ConfigDict, dataset_dir: str | None = None) -> DatasetShape:
    """The dataset fields of ``config``'s run, in this order of preference: the built dataset
    at ``dataset_dir`` (or the config's ``data.dataset_dir``), the config's own non-zero
    ``model`` fields, its generator, or the paper dataset its ``data.dataset_dir`` names."""
    path = Path(dataset_dir or config.data.dataset_dir or "")
    if dataset_dir or (str(path) not in ("", ".") and (path / "train" / "dataset.json").is_file()):
        try:
            meta = read_metadata(path / "train")
        except (FileNotFoundError, DatasetFormatError) as err:
            raise PlanError(f"--dataset {path}: {' '.join(str(err).split())}") from None
        return DatasetShape(meta.seq_len, meta.vocab_size, meta.num_puzzle_identifiers, f"dataset {path}")
    model = config.model
    if model.seq_len and model.vocab_size and model.num_puzzle_identifiers:
        return DatasetShape(model.seq_len, model.vocab_size, model.num_puzzle_identifiers, "the config's model fields")
    if config.data.generate.kind in GENERATED:
        return GENERATED[config.data.generate.kind]
    if path.name in PAPER_DATASETS:
        return PAPER_DATASETS[path.name]
    raise PlanError(
        "the dataset fields of this config are unknown: give --dataset DIR (a built dataset), or set "
        "config.model.seq_len, vocab_size and num_puzzle_identifiers"
    )
