"""Loader: the reference's sampling properties, determinism, exact resume, multi-process, test padding."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from trm_jax.data.builder import PuzzleBuilder, make_metadata
from trm_jax.data.format import DatasetFormatError, write_dataset
from trm_jax.data.loader import IGNORE_LABEL_ID, PuzzleLoader, total_training_steps
from trm_jax.data.sudoku import build_sudoku_dataset

SEQ = 6
BATCH = 8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Groups of 1-3 puzzles with 1-5 examples; inputs[:, 0] = example row (to identify it)."""
    rng = np.random.default_rng(0)
    sets, n_ex = {}, 0
    owners = {}  # set -> (example -> group, example -> puzzle)
    for set_name, n_groups in (("a", 12), ("b", 7)):
        b = PuzzleBuilder(SEQ)
        ex_group, ex_puzzle, row = [], [], 0
        for g in range(n_groups):
            for _ in range(int(rng.integers(1, 4))):
                k = int(rng.integers(1, 6))
                inp = np.zeros((k, SEQ), np.int64)
                inp[:, 0] = np.arange(row, row + k) % 250
                inp[:, 1:] = 3
                lab = np.full((k, SEQ), 4)
                lab[:, -1] = 0  # ignore_label_id
                b.add_puzzle(inp, lab, identifier=1 + b.num_puzzles % 4)
                ex_group += [g] * k
                ex_puzzle += [b.num_puzzles - 1] * k
                row += k
            b.end_group()
        sets[set_name] = b.build()
        owners[set_name] = (np.array(ex_group), np.array(ex_puzzle))
        n_ex += row
    meta = make_metadata(
        sets, pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=5, seq_len=SEQ, num_puzzle_identifiers=5
    )
    out = tmp_path_factory.mktemp("loader") / "ds"
    write_dataset(
        out, {"train": sets, "test": sets}, {"train": meta, "test": meta}, ["<blank>", "p1", "p2", "p3", "p4"]
    )
    return out, sets, owners


def _take(loader, n):
    return list(itertools.islice(loader.iter_with_info(), n))


def test_train_sampling_properties(dataset):
    out, sets, owners = dataset
    loader = PuzzleLoader(out, "train", BATCH, seed=1)
    assert loader.vocab_size == 5 and loader.seq_len == SEQ and loader.num_puzzle_identifiers == 5
    assert loader.total_groups == 19
    per_epoch = {}
    for info, batch in _take(loader, 40):
        assert {k: (v.dtype, v.shape) for k, v in batch.items()} == {
            "inputs": (np.int32, (BATCH, SEQ)),
            "labels": (np.int32, (BATCH, SEQ)),
            "puzzle_identifiers": (np.int32, (BATCH,)),
        }
        assert info.effective_size == BATCH  # last partial batch is dropped, never padded
        assert (batch["labels"][:, -1] == IGNORE_LABEL_ID).all() and (batch["labels"][:, :-1] == 4).all()
        rows = batch["inputs"][:, 0]
        assert len(set(rows.tolist())) == BATCH  # examples drawn without replacement
        ex_group, ex_puzzle = owners[info.set_name]
        puzzles = ex_puzzle[rows]
        np.testing.assert_array_equal(batch["puzzle_identifiers"], sets[info.set_name].puzzle_identifiers[puzzles])
        # one puzzle per group, and the batch is made of runs of whole groups
        for g in set(ex_group[rows].tolist()):
            assert len(set(puzzles[ex_group[rows] == g].tolist())) == 1
        runs = [k for k, _ in itertools.groupby(ex_group[rows].tolist())]
        assert len(runs) == len(set(runs))
        per_epoch.setdefault((info.epoch, info.set_name), []).extend(runs)
    for groups in per_epoch.values():  # a group is used at most once per epoch
        assert len(groups) == len(set(groups))
    orders = [tuple(v) for (e, s), v in per_epoch.items() if s == "a"]
    assert len(set(orders)) > 1  # groups reshuffled each epoch


def test_determinism_and_seed(dataset):
    out, _, _ = dataset
    a = [b for _, b in _take(PuzzleLoader(out, "train", BATCH, seed=3), 15)]
    b = [b for _, b in _take(PuzzleLoader(out, "train", BATCH, seed=3), 15)]
    c = [b for _, b in _take(PuzzleLoader(out, "train", BATCH, seed=4), 15)]
    for x, y in zip(a, b):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    assert any(not np.array_equal(x["inputs"], y["inputs"]) for x, y in zip(a, c))


def test_state_restore_gives_identical_batches(dataset):
    out, _, _ = dataset
    ref = PuzzleLoader(out, "train", BATCH, seed=7)
    it = ref.iter_with_info()
    for _ in range(9):
        next(it)
    state = json.loads(json.dumps(ref.state()))  # JSON-able
    expected = [next(it) for _ in range(12)]
    resumed = PuzzleLoader(out, "train", BATCH, seed=7)
    resumed.restore(state)
    got = _take(resumed, 12)
    for (i1, b1), (i2, b2) in zip(expected, got):
        assert i1 == i2
        for k in b1:
            np.testing.assert_array_equal(b1[k], b2[k])
    with pytest.raises(ValueError, match="seed"):
        PuzzleLoader(out, "train", BATCH, seed=8).restore(state)


def test_process_slices_concatenate_to_global_batch(dataset):
    out, _, _ = dataset
    for split in ("train", "test"):
        full = [b for _, b in _take(PuzzleLoader(out, split, BATCH, seed=2), 6)]
        parts = [
            [b for _, b in _take(PuzzleLoader(out, split, BATCH, seed=2, process_index=r, process_count=4), 6)]
            for r in range(4)
        ]
        for i, g in enumerate(full):
            for k in g:
                np.testing.assert_array_equal(np.concatenate([p[i][k] for p in parts]), g[k])
                assert parts[0][i][k].shape[0] == BATCH // 4
    with pytest.raises(ValueError, match="multiple"):
        PuzzleLoader(out, "train", BATCH, process_count=3)


def test_test_mode_covers_every_example_once_with_padding(dataset):
    out, sets, _ = dataset
    loader = PuzzleLoader(out, "test", BATCH)
    for _pass in range(2):  # each for-loop is one full pass
        seen = {name: [] for name in sets}
        for info, batch in loader.iter_with_info():
            n = info.effective_size
            first = len(seen[info.set_name])  # test batches walk each set in order
            seen[info.set_name].extend(batch["inputs"][:n, 0].tolist())
            pad = slice(n, None)
            assert (batch["inputs"][pad] == 0).all() and (batch["labels"][pad] == IGNORE_LABEL_ID).all()
            assert (batch["puzzle_identifiers"][pad] == 0).all()
            arrays = sets[info.set_name]
            ex_puzzle = np.repeat(np.arange(arrays.num_puzzles), np.diff(arrays.puzzle_indices))
            np.testing.assert_array_equal(
                batch["puzzle_identifiers"][:n], arrays.puzzle_identifiers[ex_puzzle[first : first + n]]
            )
        for name, arrays in sets.items():
            assert seen[name] == np.asarray(arrays.inputs[:, 0]).tolist()
    assert any(info.effective_size < BATCH for info, _ in loader.iter_with_info())


def test_total_steps_and_too_small(dataset, tmp_path):
    out, _, _ = dataset
    loader = PuzzleLoader(out, "train", BATCH)
    m = loader.metadata
    assert total_training_steps(10, m, BATCH) == int(10 * m.total_groups * m.mean_puzzle_examples / BATCH)
    assert loader.total_steps(10) == total_training_steps(10, m, BATCH)
    with pytest.raises(DatasetFormatError, match="no full batch"):
        next(iter(PuzzleLoader(out, "train", 10_000)))


def test_reads_sudoku_build(tmp_path):
    src = Path(__file__).parent / "data" / "sudoku_small"
    out = build_sudoku_dataset(tmp_path / "s", source_dir=src, num_aug=3)
    loader = PuzzleLoader(out, "train", 4, seed=0)
    info, batch = next(loader.iter_with_info())
    assert batch["inputs"].shape == (4, 81) and (batch["labels"] >= 2).all()
    assert loader.batches_per_epoch() == 1  # 5 groups, one single-example puzzle each, batch 4
