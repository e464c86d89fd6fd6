"""The official CSV puzzle sources and where to get them.

Sudoku-Extreme and Maze-Hard (and this project's generators) are ``source,question,answer,rating``
CSV files, one puzzle a row: :func:`read_puzzle_csv` / :func:`iter_puzzle_csv` read them with
errors naming the file and line (:class:`~trm_jax.data.format.DatasetFormatError`),
:func:`write_puzzle_csv` writes one, :func:`source_csv` finds ``{split}.csv`` in a local
directory or downloads it from the Hugging Face hub (:func:`hub_csv_path`, needs the optional
``huggingface_hub``).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from trm_jax.data.format import DatasetFormatError
from trm_jax.fileio import atomic_write

CSV_HEADER: tuple[str, ...] = ("source", "question", "answer", "rating")


@dataclass(frozen=True)
class CsvRow:
    """One row of an official puzzle CSV (question/answer are the raw strings)."""

    source: str
    question: str
    answer: str
    rating: int
    line: int = field(default=0, compare=False)


def read_puzzle_csv(path: str | os.PathLike) -> list[CsvRow]:
    """Read a whole ``source,question,answer,rating`` CSV (see :func:`iter_puzzle_csv`)."""
    return list(iter_puzzle_csv(path))


def iter_puzzle_csv(path: str | os.PathLike) -> Iterator[CsvRow]:
    """Stream the rows of a ``source,question,answer,rating`` CSV.

    Errors (missing file, wrong header, wrong column count, non-integer rating, broken quoting)
    are DatasetFormatError naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"{path}: missing")
    with open(path, newline="") as f:
        reader = csv.reader(f)
        try:
            try:
                header = next(reader)
            except StopIteration:
                raise DatasetFormatError(f"{path}: empty file (expected header {','.join(CSV_HEADER)})") from None
            if tuple(h.strip() for h in header) != CSV_HEADER:
                raise DatasetFormatError(f"{path}: line 1: header {header}, expected {list(CSV_HEADER)}")
            for rec in reader:
                line = reader.line_num
                if not rec:
                    continue
                if len(rec) != 4:
                    raise DatasetFormatError(
                        f"{path}: line {line}: expected 4 columns (source,question,answer,rating), got {len(rec)}"
                    )
                source, q, a, rating = rec
                try:
                    rating_i = int(rating)
                except ValueError:
                    raise DatasetFormatError(f"{path}: line {line}: rating {rating!r} is not an integer") from None
                yield CsvRow(source, q, a, rating_i, line)
        except csv.Error as e:
            raise DatasetFormatError(f"{path}: line {reader.line_num}: malformed CSV ({e})") from e


def write_puzzle_csv(path: str | os.PathLike, rows: Sequence[CsvRow | tuple[str, str, str, int]]) -> None:
    """Write rows in the official CSV layout (header first), atomically."""
    with atomic_write(path, newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_HEADER)
        for r in rows:
            if isinstance(r, CsvRow):
                r = (r.source, r.question, r.answer, r.rating)
            w.writerow(r)


def hub_csv_path(repo_id: str, filename: str) -> Path:
    """Download (or reuse the cache of) ``filename`` from the hub dataset ``repo_id``.

    Needs the optional ``huggingface_hub`` package (``pip install trm-jax[hub]``) and a network
    connection; raises RuntimeError saying which one is missing.
    """
    try:
        from huggingface_hub import hf_hub_download  # optional dependency, imported lazily
    except ImportError as e:
        raise RuntimeError(
            f"downloading {repo_id}/{filename} needs the optional package huggingface_hub "
            "(pip install 'trm-jax[hub]'), or pass a local CSV directory instead"
        ) from e
    try:
        return Path(hf_hub_download(repo_id, filename, repo_type="dataset"))
    except Exception as e:  # offline, unknown repo, ...
        raise RuntimeError(f"could not download {filename} from hub dataset {repo_id}: {e}") from e


def source_csv(split: str, local_dir: str | os.PathLike | None = None, hub_repo: str | None = None) -> Path:
    """Path of ``{split}.csv``: from ``local_dir`` if given, else downloaded from ``hub_repo``."""
    if local_dir is not None:
        path = Path(local_dir) / f"{split}.csv"
        if not path.is_file():
            raise DatasetFormatError(f"{path}: missing (expected {split}.csv in the source directory)")
        return path
    if hub_repo is None:
        raise ValueError("source_csv: give a local directory or a hub dataset repo")
    return hub_csv_path(hub_repo, f"{split}.csv")
