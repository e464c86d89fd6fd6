"""Maze: dihedral transforms, builder output, generator (BFS-checked), bad input."""

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from trm_jax.data import generate_maze as gen
from trm_jax.data.csv_source import read_puzzle_csv
from trm_jax.data.dihedral import dihedral, inverse_dihedral
from trm_jax.data.format import DatasetFormatError, load_split
from trm_jax.data.maze import (
    CHARSET,
    build_maze_dataset,
    decode_maze,
    read_maze_csv,
)

SRC = Path(__file__).parent / "data" / "maze_small"


def test_dihedral_group():
    x = np.arange(12).reshape(3, 4)
    expected = [x, np.rot90(x), np.rot90(x, 2), np.rot90(x, 3), x[:, ::-1], x[::-1], x.T, np.rot90(x, 2).T]
    seen = set()
    for tid in range(8):
        y = dihedral(x, tid)
        np.testing.assert_array_equal(y, expected[tid])
        np.testing.assert_array_equal(inverse_dihedral(y, tid), x)
        seen.add(y.tobytes() + bytes(y.shape))
    assert len(seen) == 8
    with pytest.raises(ValueError):
        dihedral(x, 8)


def test_build_with_augmentation(tmp_path):
    out = build_maze_dataset(tmp_path / "ds", source_dir=SRC, aug=True)
    q, a = read_maze_csv(SRC / "train.csv")
    n = q.shape[0]
    raw = json.loads((out / "train" / "dataset.json").read_text())
    assert raw == {
        "pad_id": 0,
        "ignore_label_id": 0,
        "blank_identifier_id": 0,
        "vocab_size": 6,
        "seq_len": 900,
        "num_puzzle_identifiers": 1,
        "total_groups": n,
        "mean_puzzle_examples": 1.0,
        "total_puzzles": 8 * n,
        "sets": ["all"],
    }
    tr = load_split(out / "train", "all")
    assert tr.inputs.dtype == np.uint8 and tr.inputs.shape == (8 * n, 900)
    np.testing.assert_array_equal(tr.group_indices, np.arange(0, 8 * n + 1, 8))
    np.testing.assert_array_equal(tr.puzzle_indices, np.arange(8 * n + 1))
    for i in range(n):
        for tid in range(8):
            got = np.asarray(tr.inputs[8 * i + tid]).reshape(30, 30)
            np.testing.assert_array_equal(inverse_dihedral(got, tid), q[i])
            lab = np.asarray(tr.labels[8 * i + tid]).reshape(30, 30)
            np.testing.assert_array_equal(lab, dihedral(a[i], tid))
    te = load_split(out / "test", "all")
    rows = read_puzzle_csv(SRC / "test.csv")
    assert te.inputs.shape == (len(rows), 900)  # test never augmented
    assert decode_maze(te.inputs[0]) == rows[0].question and decode_maze(te.labels[0]) == rows[0].answer


def _corrupt(tmp_path, mutate):
    src = tmp_path / "src"
    shutil.copytree(SRC, src)
    lines = (src / "test.csv").read_text().splitlines()
    lines[1] = mutate(lines[1])
    (src / "test.csv").write_text("\n".join(lines) + "\n")
    return src


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda line: line.replace("#", "X", 1), r"test\.csv: line 2: question: unknown character 'X'"),
        (lambda line: line.replace("##", "#", 1), r"test\.csv: line 2: question length 899 is not a square"),
    ],
)
def test_bad_input_named_and_nothing_left(tmp_path, mutate, message):
    src = _corrupt(tmp_path, mutate)
    with pytest.raises(DatasetFormatError, match=message):
        build_maze_dataset(tmp_path / "out", source_dir=src)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def _check_maze(q: str, a: str, side: int, longer_than: int, rating: int):
    grid = np.array(list(q)).reshape(side, side)
    ans = np.array(list(a)).reshape(side, side)
    assert set(q) <= set(CHARSET) - {"o"} and set(a) <= set(CHARSET)
    assert (grid == "S").sum() == 1 and (grid == "G").sum() == 1
    assert ((ans != "o") == (ans == grid)).all()  # answer = question + path marks
    s = tuple(np.argwhere(grid == "S")[0])
    g = tuple(np.argwhere(grid == "G")[0])
    dist, ways = gen.shortest_paths(grid != "#", s)
    assert dist[g] == rating > longer_than and ways[g] == 1
    path = ans == "o"
    assert path.sum() == dist[g] - 1
    # every path cell lies on a shortest S->G path: dist from S + dist from G == total
    dist_g, _ = gen.shortest_paths(grid != "#", g)
    assert ((dist + dist_g)[path] == dist[g]).all()


def test_generated_fixture_mazes():
    for row in read_puzzle_csv(SRC / "train.csv") + read_puzzle_csv(SRC / "test.csv"):
        _check_maze(row.question, row.answer, 30, 110, row.rating)


def test_generator_parameters_and_determinism(tmp_path):
    rows = gen.generate_maze_rows(3, seed=1, split="train", side=20, path_longer_than=40, loop_fraction=0.1)
    assert rows == gen.generate_maze_rows(3, seed=1, split="train", side=20, path_longer_than=40, loop_fraction=0.1)
    assert rows != gen.generate_maze_rows(3, seed=2, split="train", side=20, path_longer_than=40, loop_fraction=0.1)
    for r in rows:
        _check_maze(r.question, r.answer, 20, 40, r.rating)
    with pytest.raises(RuntimeError, match="longer than 10000"):
        gen.generate_maze(random.Random(0), side=12, path_longer_than=10000, max_tries=2)
    gen.generate_maze_csvs(tmp_path / "csv", num_train=2, num_test=1, seed=0, side=16, path_longer_than=20)
    out = build_maze_dataset(tmp_path / "ds", source_dir=tmp_path / "csv")
    assert load_split(out / "train", "all").inputs.shape == (2, 256)
