"""Sudoku: augmentations, builder output in the official format, generator, bad input."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from trm_jax.data import generate_sudoku as gen
from trm_jax.data.csv_source import read_puzzle_csv
from trm_jax.data.format import DatasetFormatError, load_split, read_identifiers, read_metadata
from trm_jax.data.sudoku import SudokuAugmentation, build_sudoku_dataset, is_valid_solution, read_sudoku_csv

SRC = Path(__file__).parent / "data" / "sudoku_small"


def _solutions():
    _, a = read_sudoku_csv(SRC / "train.csv")
    return a


def test_is_valid_solution():
    a = _solutions()
    assert is_valid_solution(a).all()
    bad = a[0].copy()
    bad[0, 0], bad[0, 1] = bad[0, 1], bad[0, 0]
    assert not is_valid_solution(bad)


def test_augmentation_inverse_and_validity():
    q, a = read_sudoku_csv(SRC / "train.csv")
    rng = np.random.default_rng(0)
    k = 64
    for i in range(q.shape[0]):
        aug = SudokuAugmentation.random(rng, k)
        qa = aug.apply(np.broadcast_to(q[i], (k, 9, 9)))
        aa = aug.apply(np.broadcast_to(a[i], (k, 9, 9)))
        assert is_valid_solution(aa).all()
        givens = qa > 0
        assert (givens.sum(axis=(1, 2)) == (q[i] > 0).sum()).all()
        assert (qa[givens] == aa[givens]).all()  # augmented solution solves the augmented puzzle
        np.testing.assert_array_equal(aug.invert(qa), np.broadcast_to(q[i], (k, 9, 9)))
        np.testing.assert_array_equal(aug.invert(aa), np.broadcast_to(a[i], (k, 9, 9)))
    assert aug.transpose.any() and not aug.transpose.all()
    # band structure: each block of 3 rows comes from a single band
    assert (np.sort(aug.row_perm.reshape(k, 3, 3) // 3, axis=2) == (aug.row_perm.reshape(k, 3, 3) // 3)[:, :, :1]).all()


def test_single_augmentation_on_2d_grid():
    a = _solutions()[0]
    aug = SudokuAugmentation.random(np.random.default_rng(1), 1)
    out = aug.apply(a)
    assert out.shape == (9, 9) and is_valid_solution(out)
    np.testing.assert_array_equal(aug.invert(out), a)


def test_build_matches_official_format(tmp_path):
    num_aug = 3
    out = build_sudoku_dataset(tmp_path / "ds", source_dir=SRC, num_aug=num_aug, seed=0)
    q_train, a_train = read_sudoku_csv(SRC / "train.csv")
    q_test, _ = read_sudoku_csv(SRC / "test.csv")
    assert read_identifiers(out) == ["<blank>"]
    for split, n, per in (("train", q_train.shape[0], 1 + num_aug), ("test", q_test.shape[0], 1)):
        raw = json.loads((out / split / "dataset.json").read_text())
        assert raw == {
            "pad_id": 0,
            "ignore_label_id": 0,
            "blank_identifier_id": 0,
            "vocab_size": 11,
            "seq_len": 81,
            "num_puzzle_identifiers": 1,
            "total_groups": n,
            "mean_puzzle_examples": 1.0,
            "total_puzzles": n * per,
            "sets": ["all"],
        }
        arr = load_split(out / split, "all", metadata=read_metadata(out / split))
        assert arr.inputs.shape == arr.labels.shape == (n * per, 81)
        assert arr.inputs.dtype == arr.labels.dtype == np.uint8
        np.testing.assert_array_equal(arr.puzzle_indices, np.arange(n * per + 1, dtype=np.int32))
        np.testing.assert_array_equal(arr.group_indices, np.arange(0, n * per + 1, per, dtype=np.int32))
        np.testing.assert_array_equal(arr.puzzle_identifiers, np.zeros(n * per, np.int32))
        assert arr.puzzle_indices.dtype == arr.group_indices.dtype == arr.puzzle_identifiers.dtype == np.int32
        assert arr.inputs.min() >= 1 and arr.inputs.max() <= 10 and arr.labels.min() >= 2
    train = load_split(out / "train", "all")
    # first puzzle of each group is the original (CSV order, no subsampling), token = digit + 1
    np.testing.assert_array_equal(train.inputs[:: 1 + num_aug], q_train.reshape(-1, 81) + 1)
    np.testing.assert_array_equal(train.labels[:: 1 + num_aug], a_train.reshape(-1, 81) + 1)
    assert is_valid_solution(np.asarray(train.labels).reshape(-1, 9, 9) - 1).all()


def test_build_is_deterministic_and_subsamples(tmp_path):
    a = build_sudoku_dataset(tmp_path / "a", source_dir=SRC, num_aug=2, subsample_size=3, seed=5)
    b = build_sudoku_dataset(tmp_path / "b", source_dir=SRC, num_aug=2, subsample_size=3, seed=5)
    for f in ("all__inputs.npy", "all__labels.npy"):
        assert (a / "train" / f).read_bytes() == (b / "train" / f).read_bytes()
    assert read_metadata(a / "train").total_groups == 3
    assert read_metadata(a / "test").total_groups == 3  # test is never subsampled


def test_min_difficulty_filters():
    ratings = [r.rating for r in read_puzzle_csv(SRC / "train.csv")]
    cut = sorted(ratings)[len(ratings) // 2]
    q, _ = read_sudoku_csv(SRC / "train.csv", min_difficulty=cut)
    assert q.shape[0] == sum(r >= cut for r in ratings)


def _corrupt(tmp_path, line_index, new_line):
    src = tmp_path / "src"
    shutil.copytree(SRC, src)
    lines = (src / "train.csv").read_text().splitlines()
    lines[line_index] = new_line(lines[line_index])
    (src / "train.csv").write_text("\n".join(lines) + "\n")
    return src


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda line: line.replace(",", ",x", 1), "line 3: question/answer must have 81 characters"),
        (
            lambda line: line[: line.index(",") + 1] + "A" + line[line.index(",") + 2 :],
            "line 3: unknown character 'A' in question",
        ),
        (lambda line: line + ",extra", "line 3: expected 4 columns"),
    ],
)
def test_bad_rows_named_and_nothing_left(tmp_path, mutate, message):
    src = _corrupt(tmp_path, 2, mutate)
    with pytest.raises(DatasetFormatError, match=message):
        build_sudoku_dataset(tmp_path / "out", source_dir=src)
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_answer_contradicting_givens(tmp_path):
    def swap_answer(line):
        src, q, a, r = line.split(",")
        first_given = next(i for i, c in enumerate(q) if c != ".")
        d = a[first_given]
        a = a[:first_given] + ("1" if d != "1" else "2") + a[first_given + 1 :]
        return ",".join([src, q, a, r])

    src = _corrupt(tmp_path, 1, swap_answer)
    with pytest.raises(DatasetFormatError, match=r"train\.csv: line 2: answer contradicts"):
        read_sudoku_csv(src / "train.csv")


def test_missing_source(tmp_path):
    with pytest.raises(DatasetFormatError, match="train.csv: missing"):
        build_sudoku_dataset(tmp_path / "out", source_dir=tmp_path)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- generator


def _naive_count(grid, limit=2):
    """Independent plain backtracking solution counter (most-constrained cell first)."""
    g = list(grid)

    def cands(i):
        r, c = divmod(i, 9)
        used = {g[r * 9 + k] for k in range(9)} | {g[k * 9 + c] for k in range(9)}
        br, bc = 3 * (r // 3), 3 * (c // 3)
        used |= {g[(br + a) * 9 + bc + b] for a in range(3) for b in range(3)}
        return [d for d in range(1, 10) if d not in used]

    def rec():
        best = None
        for i in range(81):
            if g[i] == 0:
                cs = cands(i)
                if best is None or len(cs) < len(best[1]):
                    best = (i, cs)
                    if len(cs) <= 1:
                        break
        if best is None:
            return 1
        n = 0
        for d in best[1]:
            g[best[0]] = d
            n += rec()
            if n >= limit:
                break
        g[best[0]] = 0
        return n

    return rec()


def _naive_singles(grid):
    """Independent naked+hidden singles; returns True when that alone completes the grid."""
    g = list(grid)
    units = [[r * 9 + c for c in range(9)] for r in range(9)] + [[r * 9 + c for r in range(9)] for c in range(9)]
    units += [[(3 * br + a) * 9 + 3 * bc + b for a in range(3) for b in range(3)] for br in range(3) for bc in range(3)]
    peers = [set().union(*[u for u in units if i in u]) - {i} for i in range(81)]
    progress = True
    while progress:
        progress = False
        cand = {i: {1, 2, 3, 4, 5, 6, 7, 8, 9} - {g[p] for p in peers[i]} for i in range(81) if g[i] == 0}
        for i, cs in cand.items():
            if len(cs) == 1:
                g[i] = cs.pop()
                progress = True
                break
        if progress:
            continue
        for u in units:
            for d in range(1, 10):
                spots = [i for i in u if g[i] == 0 and d in cand[i]]
                if len(spots) == 1 and d not in {g[i] for i in u}:
                    g[spots[0]] = d
                    progress = True
                    break
            if progress:
                break
    return all(g)


def test_generated_puzzles_unique_and_need_search():
    rows = read_puzzle_csv(SRC / "train.csv") + read_puzzle_csv(SRC / "test.csv")
    for row in rows:
        grid = [0 if ch == "." else int(ch) for ch in row.question]
        assert _naive_count(grid) == 1
        assert not _naive_singles(grid)
        assert row.rating >= 1
        assert gen.count_solutions(grid)[1] == row.rating
        assert is_valid_solution(np.array([int(ch) for ch in row.answer]).reshape(9, 9))


def test_generator_deterministic_and_checked_by_own_solver():
    a = gen.generate_sudoku_rows(2, seed=3, split="train")
    b = gen.generate_sudoku_rows(2, seed=3, split="train")
    c = gen.generate_sudoku_rows(2, seed=3, split="test")
    assert a == b and a != c
    for row in a:
        grid = [0 if ch == "." else int(ch) for ch in row.question]
        n, dead_ends, sol = gen.count_solutions(grid)
        assert n == 1 and dead_ends == row.rating >= 1
        assert "".join(map(str, sol)) == row.answer
        assert not gen.solvable_by_singles(grid)


def test_generated_csv_builds(tmp_path):
    gen.generate_sudoku_csvs(tmp_path / "csv", num_train=2, num_test=1, seed=11)
    out = build_sudoku_dataset(tmp_path / "ds", source_dir=tmp_path / "csv", num_aug=1)
    assert read_metadata(out / "train").total_puzzles == 4


def test_build_cli(tmp_path, capsys):
    from trm_jax.data import build

    assert {"sudoku", "maze", "gen-sudoku", "gen-maze"} <= set(build.COMMANDS)
    assert build.main(["sudoku", str(tmp_path / "ds"), "--source", str(SRC), "--num-aug", "1"]) == 0
    assert read_metadata(tmp_path / "ds" / "train").total_puzzles == 10
    assert build.main(["sudoku", str(tmp_path / "ds"), "--source", str(SRC)]) == 2  # exists
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert build.main(["sudoku", str(tmp_path / "ds2"), "--source", str(tmp_path)]) == 2
    assert "train.csv: missing" in capsys.readouterr().err
    assert not (tmp_path / "ds2").exists()
