"""Puzzle data: the official on-disk format, builders, offline generators, loader, rendering.

Modules: ``format`` (dataset directory format), ``builder`` (a split's arrays), ``csv_source``
(the official CSV sources, hub
download), ``dihedral`` (the 8 grid symmetries), ``sudoku`` / ``maze`` (builders from the
official CSVs), ``generate_sudoku`` / ``generate_maze`` (offline CSV generators),
``loader`` (batches as the reference samples them), ``render`` (PNGs), ``build`` (command line:
``python -m trm_jax.data.build``). ARC lives in ``arc*.py``.
"""

from trm_jax.data.builder import PuzzleBuilder, make_metadata
from trm_jax.data.format import (
    DatasetFormatError,
    DatasetMetadata,
    SplitArrays,
    load_split,
    read_identifiers,
    read_metadata,
    write_dataset,
)
from trm_jax.data.loader import IGNORE_LABEL_ID, PuzzleLoader, total_training_steps

__all__ = [
    "DatasetFormatError",
    "DatasetMetadata",
    "IGNORE_LABEL_ID",
    "PuzzleBuilder",
    "PuzzleLoader",
    "SplitArrays",
    "load_split",
    "make_metadata",
    "read_identifiers",
    "read_metadata",
    "total_training_steps",
    "write_dataset",
]
