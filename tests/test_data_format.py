"""On-disk format: builder bookkeeping, atomic writes, validated reads, CSV errors."""

import json
import os

import numpy as np
import pytest

from trm_jax.data import csv_source
from trm_jax.data import format as fmt
from trm_jax.data.builder import PuzzleBuilder, make_metadata
from trm_jax.data.csv_source import read_puzzle_csv
from trm_jax.data.format import (
    DatasetFormatError,
    DatasetMetadata,
    load_split,
    read_identifiers,
    read_metadata,
    write_dataset,
)

OFFICIAL_KEYS = {
    "pad_id",
    "ignore_label_id",
    "blank_identifier_id",
    "vocab_size",
    "seq_len",
    "num_puzzle_identifiers",
    "total_groups",
    "mean_puzzle_examples",
    "total_puzzles",
    "sets",
}


def _small_arrays():
    b = PuzzleBuilder(seq_len=4)
    b.add_puzzle(np.full((2, 4), 3), np.full((2, 4), 4), identifier=1)
    b.end_group()
    b.add_puzzle(np.full((1, 4), 5), np.full((1, 4), 6), identifier=2)
    b.add_puzzle(np.full((3, 4), 7), np.full((3, 4), 8), identifier=2)
    b.end_group()
    return b.build()


def _write(tmp_path, name="ds", **kw):
    arrays = _small_arrays()
    meta = make_metadata(
        {"all": arrays},
        pad_id=0,
        ignore_label_id=0,
        blank_identifier_id=0,
        vocab_size=9,
        seq_len=4,
        num_puzzle_identifiers=3,
    )
    out = tmp_path / name
    write_dataset(out, {"train": {"all": arrays}}, {"train": meta}, ["<blank>", "a", "b"], **kw)
    return out, arrays, meta


def test_builder_bookkeeping():
    a = _small_arrays()
    assert a.puzzle_indices.tolist() == [0, 2, 3, 6]
    assert a.group_indices.tolist() == [0, 1, 3]
    assert a.puzzle_identifiers.tolist() == [1, 2, 2]
    assert a.inputs.dtype == np.uint8 and a.labels.dtype == np.uint8
    assert {a.puzzle_indices.dtype, a.group_indices.dtype, a.puzzle_identifiers.dtype} == {np.dtype(np.int32)}
    assert a.inputs[:, 0].tolist() == [3, 3, 5, 7, 7, 7]


def test_builder_rejects_misuse():
    b = PuzzleBuilder(seq_len=4)
    with pytest.raises(ValueError, match="empty"):
        b.end_group()
    with pytest.raises(ValueError, match=r"\[n, 4\]"):
        b.add_puzzle(np.zeros((1, 5)), np.zeros((1, 5)), 0)
    b.add_puzzle(np.zeros((1, 4)), np.zeros((1, 4)), 0)
    with pytest.raises(ValueError, match="not closed"):
        b.build()


def test_round_trip(tmp_path):
    out, arrays, meta = _write(tmp_path, extra_json={"test_puzzles": {"x": 1}})
    assert sorted(os.listdir(out)) == ["identifiers.json", "test_puzzles.json", "train"]
    assert sorted(os.listdir(out / "train")) == sorted(["dataset.json"] + [f"all__{f}.npy" for f in fmt.FIELDS])
    with open(out / "train" / "dataset.json") as f:
        raw = json.load(f)
    assert set(raw) == OFFICIAL_KEYS
    assert raw["mean_puzzle_examples"] == 2.0 and raw["total_groups"] == 2 and raw["total_puzzles"] == 3
    assert read_metadata(out / "train") == meta
    assert read_identifiers(out) == ["<blank>", "a", "b"]
    loaded = load_split(out / "train", "all", metadata=meta)
    assert isinstance(loaded.inputs, np.memmap)
    for name in fmt.FIELDS:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(arrays, name))
        assert getattr(loaded, name).dtype == getattr(arrays, name).dtype
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temp dirs left


def test_existing_output_refused_then_overwritten(tmp_path):
    out, _, _ = _write(tmp_path)
    with pytest.raises(FileExistsError, match="already exists"):
        _write(tmp_path)
    _write(tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real_save = np.save

    def failing_save(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full (simulated)")
        return real_save(*a, **k)

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(OSError, match="simulated"):
        _write(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_invalid_arrays_rejected_before_writing(tmp_path):
    arrays = _small_arrays()
    arrays.puzzle_indices = np.array([0, 2, 3, 7], np.int32)  # does not end at num_examples
    meta = make_metadata(
        {"all": arrays},
        pad_id=0,
        ignore_label_id=0,
        blank_identifier_id=0,
        vocab_size=9,
        seq_len=4,
        num_puzzle_identifiers=3,
    )
    with pytest.raises(DatasetFormatError, match="train/all: puzzle_indices"):
        write_dataset(tmp_path / "bad", {"train": {"all": arrays}}, {"train": meta}, ["<blank>", "a", "b"])
    assert list(tmp_path.iterdir()) == []


def test_metadata_errors_name_file_and_field(tmp_path):
    out, _, meta = _write(tmp_path)
    path = out / "train" / "dataset.json"
    d = meta.to_json_dict()
    del d["seq_len"]
    path.write_text(json.dumps(d))
    with pytest.raises(DatasetFormatError, match=r"dataset\.json: missing field\(s\) \['seq_len'\]"):
        read_metadata(out / "train")
    d = meta.to_json_dict()
    d["vocab_size"] = "eleven"
    path.write_text(json.dumps(d))
    with pytest.raises(DatasetFormatError, match="'vocab_size' has invalid value"):
        read_metadata(out / "train")
    path.write_text("{not json")
    with pytest.raises(DatasetFormatError, match="malformed JSON"):
        read_metadata(out / "train")
    with pytest.raises(DatasetFormatError, match="file not found"):
        read_metadata(tmp_path / "nowhere")
    assert DatasetMetadata.from_json_dict({**meta.to_json_dict(), "ignore_label_id": None}).ignore_label_id is None


def test_truncated_and_missing_npy(tmp_path):
    out, _, _ = _write(tmp_path)
    f = out / "train" / "all__inputs.npy"
    data = f.read_bytes()
    f.write_bytes(data[:-5])
    with pytest.raises(DatasetFormatError, match=r"all__inputs\.npy: truncated"):
        load_split(out / "train", "all")
    f.write_bytes(b"garbage")
    with pytest.raises(DatasetFormatError, match=r"all__inputs\.npy: not a valid \.npy"):
        load_split(out / "train", "all")
    f.unlink()
    with pytest.raises(DatasetFormatError, match=r"all__inputs\.npy: missing"):
        load_split(out / "train", "all")


def test_csv_errors(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("source,question,answer,rating\na,b,c,1\na,b,c\n")
    with pytest.raises(DatasetFormatError, match=r"x\.csv: line 3: expected 4 columns"):
        read_puzzle_csv(p)
    p.write_text("source,question,answer,rating\na,b,c,hard\n")
    with pytest.raises(DatasetFormatError, match=r"line 2: rating 'hard' is not an integer"):
        read_puzzle_csv(p)
    p.write_text("src,q,a,r\n")
    with pytest.raises(DatasetFormatError, match="line 1: header"):
        read_puzzle_csv(p)
    with pytest.raises(DatasetFormatError, match="nope.csv: missing"):
        read_puzzle_csv(tmp_path / "nope.csv")
    rows = [csv_source.CsvRow("s", "q,with comma", "a", 3)]
    csv_source.write_puzzle_csv(p, rows)
    assert read_puzzle_csv(p) == rows


def test_hub_without_package_gives_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_hub(name, *a, **k):
        if name.startswith("huggingface_hub"):
            raise ImportError("simulated: not installed")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_hub)
    with pytest.raises(RuntimeError, match="needs the optional package huggingface_hub"):
        csv_source.source_csv("train", hub_repo="sapientinc/sudoku-extreme")


def test_outputs_are_created_readable(tmp_path):
    """Dataset directories, CSVs and PNGs get 0755 / 0644 (less the umask), not tempfile's 0700 / 0600."""
    import stat

    from trm_jax.data import render
    from trm_jax.data.sudoku import build_sudoku_dataset

    old = os.umask(0o022)
    try:
        solved = "".join(str((r * 3 + r // 3 + c) % 9 + 1) for r in range(9) for c in range(9))
        for split in ("train", "test"):
            csv_source.write_puzzle_csv(tmp_path / "src" / f"{split}.csv", [("s", "." + solved[1:], solved, 0)])
        out = build_sudoku_dataset(tmp_path / "data", source_dir=tmp_path / "src", hub_repo=None, num_aug=0)
        png = render.save_png(render.render_sudoku(np.full(81, 2)), tmp_path / "p.png")
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(out) == mode(out / "train") == 0o755
    assert mode(tmp_path / "src" / "train.csv") == mode(out / "identifiers.json") == mode(png) == 0o644
