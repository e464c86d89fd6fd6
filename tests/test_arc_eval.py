"""ARC evaluator: crop, un-augmentation, voting, pass@k and submission.json."""

from __future__ import annotations

import importlib
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from trm_jax.data import arc
from trm_jax.data import format as fmt
from trm_jax.data.arc_augment import ArcAugmentation, augmented_name, grid_to_canvas
from trm_jax.data.arc_eval import ArcEvaluator

PREFIX = Path(__file__).parent / "data" / "arc" / "arc-agi"

A_IN0, A_OUT0 = [[1, 2], [3, 4]], [[5, 6, 7]]
A_IN1, A_OUT1 = [[0, 1]], [[2], [2]]
B_IN, B_OUT = [[8]], [[9, 9], [9, 9]]
WRONG = [[0, 0, 0]]


IDENTIFIERS = ["<blank>", "A", "B", augmented_name("A", ArcAugmentation(1, (0, 2, 3, 4, 5, 6, 7, 8, 9, 1)))]
TEST_PUZZLES = {
    "A": {"train": [], "test": [{"input": A_IN0, "output": A_OUT0}, {"input": A_IN1, "output": A_OUT1}]},
    "B": {"train": [], "test": [{"input": B_IN, "output": B_OUT}]},
}


def _evaluator(**kwargs) -> ArcEvaluator:
    return ArcEvaluator(IDENTIFIERS, TEST_PUZZLES, **kwargs)


def _batch(rows):
    """rows: (identifier, input grid, predicted grid, q logit) -> the evaluator's batch arrays."""
    inputs = np.stack([grid_to_canvas(np.array(r[1], np.uint8)) for r in rows]).astype(np.int32)
    preds = np.stack([grid_to_canvas(np.array(r[2], np.uint8)) for r in rows]).astype(np.int32)
    q = np.array([r[3] for r in rows], np.float32)
    ids = np.array([r[0] for r in rows], np.int32)
    return inputs, preds, q, ids


def test_perfect_predictions_score_one_and_fill_the_submission(tmp_path):
    ev = _evaluator()
    ev.update(*_batch([(1, A_IN0, A_OUT0, 0.0), (1, A_IN1, A_OUT1, 0.0), (2, B_IN, B_OUT, -3.0)]))
    assert ev.result() == {f"ARC/pass@{k}": 1.0 for k in (1, 2, 5, 10, 100, 1000)}
    path = ev.write_submission(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["submission.json"]
    sub = json.loads(Path(path).read_text())
    assert sub == {
        "A": [{"attempt_1": A_OUT0, "attempt_2": A_OUT0}, {"attempt_1": A_OUT1, "attempt_2": A_OUT1}],
        "B": [{"attempt_1": B_OUT, "attempt_2": B_OUT}],
    }


def test_known_mix_gives_hand_computed_pass_at_k():
    ev = _evaluator(pass_ks=(1, 2, 3))
    ev.update(
        *_batch(
            [
                # A, test 0: WRONG has 3 votes, the truth 2, another wrong grid 1 -> ranks 2nd.
                (1, A_IN0, WRONG, 5.0),
                (1, A_IN0, A_OUT0, 5.0),
                (1, A_IN0, WRONG, 5.0),
                (1, A_IN0, [[1]], 9.0),
                (1, A_IN0, A_OUT0, 5.0),
                (1, A_IN0, WRONG, 5.0),
                # A, test 1: no prediction at all -> unsolved and absent from the submission.
                # B: one vote each; the truth has the higher confidence -> ranks 1st.
                (2, B_IN, [[9]], -2.0),
                (2, B_IN, B_OUT, 2.0),
                # Padding rows (blank id) are ignored whatever they hold.
                (0, B_IN, [[9]], 50.0),
                (0, B_IN, [[9]], 50.0),
            ]
        )
    )
    # pass@1: A = 0/2, B = 1 -> 0.5; pass@2 and pass@3: A = 1/2, B = 1 -> 0.75.
    assert ev.result() == {"ARC/pass@1": 0.5, "ARC/pass@2": 0.75, "ARC/pass@3": 0.75}
    sub = ev.submission()
    assert sub["A"] == [{"attempt_1": WRONG, "attempt_2": A_OUT0}]
    assert sub["B"] == [{"attempt_1": B_OUT, "attempt_2": [[9]]}]


def test_ties_break_on_mean_confidence_then_first_seen():
    ev = _evaluator(pass_ks=(1,))
    # Equal votes (1 each) and equal confidence: the first seen wins.
    ev.update(*_batch([(2, B_IN, [[3]], 1.0), (2, B_IN, B_OUT, 1.0)]))
    assert ev.result()["ARC/pass@1"] == 0.0
    ev.reset()
    ev.update(*_batch([(2, B_IN, B_OUT, 1.0), (2, B_IN, [[3]], 1.0)]))
    assert ev.result()["ARC/pass@1"] == 0.5  # B solved, A has no predictions
    ev.reset()
    # Votes beat confidence: mean q of [[3]] is lower but it has two votes.
    ev.update(*_batch([(2, B_IN, B_OUT, 4.0), (2, B_IN, [[3]], -4.0), (2, B_IN, [[3]], -4.0)]))
    assert ev.result()["ARC/pass@1"] == 0.0


def test_augmented_predictions_are_un_augmented():
    aug = ArcAugmentation(1, (0, 2, 3, 4, 5, 6, 7, 8, 9, 1))  # identifier 3 in _evaluator
    x0, y0 = aug.apply(np.array(A_IN0, np.uint8)), aug.apply(np.array(A_OUT0, np.uint8))
    x1 = aug.apply(np.array(A_IN1, np.uint8))
    assert x0.shape != np.array(A_IN0).shape or not np.array_equal(x0, A_IN0)
    ev = _evaluator(pass_ks=(1,))
    # Two augmented votes for the truth on test 0 outweigh one plain wrong vote; test 1 is
    # answered by the augmented frame with a grid that is only right after un-augmenting.
    ev.update(
        *_batch(
            [
                (3, x0, y0, 0.0),
                (1, A_IN0, WRONG, 0.0),
                (3, x0, y0, 0.0),
                (3, x1, aug.apply(np.array(A_OUT1, np.uint8)), 0.0),
            ]
        )
    )
    assert ev.result()["ARC/pass@1"] == 0.5  # A fully solved, B no predictions
    assert ev.submission()["A"][1]["attempt_1"] == A_OUT1
    # The same prediction read in the plain frame would be wrong.
    ev2 = _evaluator(pass_ks=(1,))
    ev2.update(*_batch([(1, A_IN1, aug.apply(np.array(A_OUT1, np.uint8)), 0.0)]))
    assert ev2.result()["ARC/pass@1"] == 0.0


def test_merge_equals_one_process_and_begin_eval_modes():
    rows = [(1, A_IN0, WRONG, 1.0), (1, A_IN0, A_OUT0, 2.0), (2, B_IN, B_OUT, 0.5), (1, A_IN1, A_OUT1, 0.1)]
    whole = _evaluator()
    whole.update(*_batch(rows))
    first, second = _evaluator(), _evaluator()
    first.update(*_batch(rows[:2]))
    second.update(*_batch(rows[2:]))
    first.merge(second.state())
    assert first.result() == whole.result() and first.submission() == whole.submission()
    keep = _evaluator()
    keep.update(*_batch(rows))
    keep.begin_eval()  # the reference's default: votes pool across evaluations
    assert keep.result() == whole.result()
    fresh = _evaluator(aggregate_across_evals=False)
    fresh.update(*_batch(rows))
    fresh.begin_eval()
    assert fresh.result()["ARC/pass@1000"] == 0.0 and fresh.submission() == {"A": [], "B": []}


def test_bad_batches_are_rejected():
    ev = _evaluator()
    inputs, preds, q, ids = _batch([(1, A_IN0, A_OUT0, 0.0)])
    with pytest.raises(ValueError, match="batch sizes differ"):
        ev.update(inputs, preds, np.zeros(2), ids)
    with pytest.raises(ValueError, match="outside identifiers.json"):
        ev.update(inputs, preds, q, np.array([7]))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("arc_eval") / "arc1"
    arc.build_arc_from_combined(PREFIX, out, preset="arc1", num_aug=3, seed=0)
    return out


def test_end_to_end_on_a_built_dataset(built, tmp_path):
    test = fmt.load_split(built / "test", "all", mmap=False)
    ev = ArcEvaluator.from_dataset_dir(str(built))
    # Labels of every augmented test example, in batches of 4 padded with blank rows.
    n = test.num_examples
    example_ids = np.repeat(test.puzzle_identifiers, np.diff(test.puzzle_indices))
    for start in range(0, n, 4):
        stop = min(start + 4, n)
        pad = 4 - (stop - start)
        inputs = np.concatenate([test.inputs[start:stop], np.zeros((pad, 900), np.uint8)])
        preds = np.concatenate([test.labels[start:stop], np.full((pad, 900), 5, np.uint8)])
        ids = np.concatenate([example_ids[start:stop], np.zeros(pad, np.int32)])
        ev.update(inputs, preds, np.zeros(4), ids)
    assert ev.result()["ARC/pass@1"] == 1.0
    sub = json.loads(Path(ev.write_submission(str(tmp_path))).read_text())
    truth = json.loads((built / "test_puzzles.json").read_text())
    assert sorted(sub) == sorted(truth)
    for name, puzzle in truth.items():
        assert [a["attempt_1"] for a in sub[name]] == [t["output"] for t in puzzle["test"]]
        assert all(set(a) == {"attempt_1", "attempt_2"} for a in sub[name])


def _reference_evaluator_class():
    """The official evaluator class imported from TRM_REFERENCE_DIR (a checkout of the official repo)."""
    ref = os.environ.get("TRM_REFERENCE_DIR")
    if not ref or not os.path.isfile(os.path.join(ref, "evaluators", "arc.py")):
        pytest.skip("set TRM_REFERENCE_DIR to a checkout of the official TRM code to compare")
    torch = pytest.importorskip("torch")
    pytest.importorskip("pydantic")
    # Its optional dependencies are replaced by stand-ins that are enough for evaluation.
    if "numba" not in sys.modules:
        numba = types.ModuleType("numba")
        numba.njit = lambda f: f
        sys.modules["numba"] = numba
    if "argdantic" not in sys.modules:
        argdantic = types.ModuleType("argdantic")
        argdantic.ArgParser = lambda: types.SimpleNamespace(command=lambda **k: lambda f: f)
        sys.modules["argdantic"] = argdantic
    sys.path.insert(0, ref)
    try:
        module = importlib.import_module("evaluators.arc")
        common = importlib.import_module("dataset.common")
    finally:
        sys.path.remove(ref)
    return module, common, torch


def test_matches_the_reference_evaluator(built, tmp_path, monkeypatch):
    module, common, torch = _reference_evaluator_class()
    monkeypatch.setattr(module.dist, "gather_object", lambda obj, out, dst=0, group=None: out.__setitem__(0, obj))
    meta = json.loads((built / "test" / "dataset.json").read_text())
    theirs = module.ARC(str(built), common.PuzzleDatasetMetadata(**meta))
    ours = ArcEvaluator.from_dataset_dir(str(built))
    test = fmt.load_split(built / "test", "all", mmap=False)
    example_ids = np.repeat(test.puzzle_identifiers, np.diff(test.puzzle_indices))
    rng = np.random.RandomState(0)
    for start in range(0, test.num_examples, 5):
        sl = slice(start, start + 5)
        inputs, preds = test.inputs[sl].astype(np.int32), test.labels[sl].astype(np.int32).copy()
        for row in range(preds.shape[0]):  # corrupt most predictions in a few distinct ways
            kind = rng.choice(4, p=[0.3, 0.4, 0.15, 0.15])
            if kind == 1:
                preds[row] = inputs[row]  # a wrong answer that agrees across augmentations
            elif kind == 2:
                preds[row, 0] = 2 + rng.randint(2)
            elif kind == 3:
                preds[row, 1] = 1  # an end marker inside the grid
        q = rng.choice([-1.0, 0.0, 1.0], size=preds.shape[0]).astype(np.float32)
        ids = example_ids[sl].copy()
        ids[rng.rand(ids.shape[0]) < 0.1] = 0
        ours.update(inputs, preds, q, ids)
        theirs.update_batch(
            {"inputs": torch.from_numpy(inputs), "puzzle_identifiers": torch.from_numpy(ids)},
            {"preds": torch.from_numpy(preds), "q_halt_logits": torch.from_numpy(q)},
        )
    their_dir = tmp_path / "theirs"
    their_dir.mkdir()
    expected = theirs.result(str(their_dir), rank=0, world_size=1)
    assert ours.result() == expected
    assert 0.0 < expected["ARC/pass@1"] < 1.0  # a mix, not a trivial case
    assert ours.submission() == json.loads((their_dir / "submission.json").read_text())


def test_hand_built_mix_matches_the_reference_evaluator(tmp_path, monkeypatch):
    module, common, torch = _reference_evaluator_class()
    monkeypatch.setattr(module.dist, "gather_object", lambda obj, out, dst=0, group=None: out.__setitem__(0, obj))
    (tmp_path / "identifiers.json").write_text(json.dumps(IDENTIFIERS))
    (tmp_path / "test_puzzles.json").write_text(json.dumps(TEST_PUZZLES))
    meta = common.PuzzleDatasetMetadata(
        pad_id=0,
        ignore_label_id=0,
        blank_identifier_id=0,
        vocab_size=12,
        seq_len=900,
        num_puzzle_identifiers=4,
        total_groups=1,
        mean_puzzle_examples=1.0,
        total_puzzles=1,
        sets=["all"],
    )
    aug = ArcAugmentation(1, (0, 2, 3, 4, 5, 6, 7, 8, 9, 1))
    x0 = aug.apply(np.array(A_IN0, np.uint8))
    rows = [
        (1, A_IN0, WRONG, 1.0),
        (3, x0, aug.apply(np.array(A_OUT0, np.uint8)), 1.0),
        (1, A_IN0, [[4]], 1.0),
        (2, B_IN, [[3]], 0.5),
        (2, B_IN, B_OUT, 0.5),
        (0, B_IN, [[1]], 9.0),
        (1, A_IN1, A_OUT1, -1.0),
        (1, A_IN1, WRONG, 2.0),
        (1, A_IN1, WRONG, -3.0),
    ]
    theirs = module.ARC(str(tmp_path), meta, pass_Ks=(1, 2, 3))
    ours = _evaluator(pass_ks=(1, 2, 3))
    for start in range(0, len(rows), 4):
        inputs, preds, q, ids = _batch(rows[start : start + 4])
        ours.update(inputs, preds, q, ids)
        theirs.update_batch(
            {"inputs": torch.from_numpy(inputs), "puzzle_identifiers": torch.from_numpy(ids)},
            {"preds": torch.from_numpy(preds), "q_halt_logits": torch.from_numpy(q)},
        )
    expected = theirs.result(str(tmp_path), rank=0, world_size=1)
    assert ours.result() == expected
    assert ours.submission() == json.loads((tmp_path / "submission.json").read_text())
