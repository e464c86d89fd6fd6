"""ARC evaluator: vote over augmentations, pass@k, and an ARC Prize ``submission.json``.

Pure numpy / Python, so the trainer can feed it host arrays after each evaluation batch.

For every example of an evaluation batch (padding rows, whose puzzle identifier is the blank id,
are skipped): the input and predicted canvases are cropped to grids, the augmentation recorded in
the puzzle's name is undone, and the prediction is filed under (original puzzle, hash of the
un-augmented test input) with sigmoid(q_halt_logit) as its confidence. ``result`` then, for every
test input of every test puzzle, pools the predictions of all augmentations: each distinct grid
gets its vote count and mean confidence, and the grids are ranked by (votes, mean confidence),
ties kept in first-seen order. pass@k counts a test input solved when its true output is among the
top k; a puzzle scores the fraction of its test inputs solved; the metric is the mean over test
puzzles (pass@2 is the ARC score). This matches the reference evaluator's definition.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from trm_jax.data.arc_augment import crop_sizes, cropped_grid, grid_from_json, grid_hash, parse_augmented_name
from trm_jax.fileio import read_json, write_json_atomic

DEFAULT_PASS_KS = (1, 2, 5, 10, 100, 1000)
SUBMISSION_FILENAME = "submission.json"


def _sigmoid64(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-x))


class ArcEvaluator:
    """Accumulates ARC predictions and scores them.

    Args:
      identifiers: the dataset's ``identifiers.json`` list (identifier id -> puzzle name).
      test_puzzles: the dataset's ``test_puzzles.json`` mapping (name -> {"train": ..., "test": ...},
        test pairs with "input" and "output").
      blank_identifier_id: identifier of padding rows (skipped).
      pass_ks: the k of pass@k.
      submission_k: attempts per test input in the submission.
      aggregate_across_evals: when True (the reference's default), ``begin_eval`` keeps earlier
        predictions, so votes pool over successive evaluations; when False it clears them.
    """

    def __init__(
        self,
        identifiers: Sequence[str],
        test_puzzles: Mapping[str, Any],
        blank_identifier_id: int = 0,
        pass_ks: Sequence[int] = DEFAULT_PASS_KS,
        submission_k: int = 2,
        aggregate_across_evals: bool = True,
    ):
        if submission_k < 1:
            raise ValueError(f"submission_k must be >= 1, got {submission_k}")
        self.identifiers = list(identifiers)
        self.pass_ks = tuple(int(k) for k in pass_ks)
        self.submission_k = submission_k
        self.blank_identifier_id = blank_identifier_id
        self.aggregate_across_evals = aggregate_across_evals
        # Decoded truth per test puzzle: list of (input hash, output hash) per test pair.
        self._test_pairs: dict[str, list[tuple[str, str]]] = {}
        for name, puzzle in test_puzzles.items():
            pairs = []
            for i, pair in enumerate(puzzle["test"]):
                where = f"test puzzle {name!r}, test pair {i}"
                pairs.append(
                    (
                        grid_hash(grid_from_json(pair["input"], where + " input")),
                        grid_hash(grid_from_json(pair["output"], where + " output")),
                    )
                )
            self._test_pairs[name] = pairs
        # Per-augmentation names decoded once (identifier id -> (original name, augmentation)).
        self._decoded_names = [parse_augmented_name(n) for n in self.identifiers]
        self._grids: dict[str, np.ndarray] = {}
        self._preds: dict[str, dict[str, list[tuple[str, float]]]] = {}

    @classmethod
    def from_dataset_dir(cls, data_dir: str, **kwargs: Any) -> "ArcEvaluator":
        """Builds an evaluator from a dataset directory (``identifiers.json``, ``test_puzzles.json``).

        ``blank_identifier_id`` defaults to the value in ``test/dataset.json`` when that exists.
        """

        def _load(filename: str) -> Any:
            path = os.path.join(data_dir, filename)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path}: missing (the ARC evaluator needs {filename})")
            return read_json(path, ValueError, f"the ARC dataset's {filename}")

        identifiers = _load("identifiers.json")
        test_puzzles = _load("test_puzzles.json")
        meta_path = os.path.join(data_dir, "test", "dataset.json")
        if "blank_identifier_id" not in kwargs and os.path.isfile(meta_path):
            kwargs["blank_identifier_id"] = int(_load(os.path.join("test", "dataset.json"))["blank_identifier_id"])
        return cls(identifiers, test_puzzles, **kwargs)

    # ------------------------------------------------------------------------------------------
    # Accumulation

    def begin_eval(self) -> None:
        """Called before an evaluation pass; clears the state unless votes aggregate across evals."""
        if not self.aggregate_across_evals:
            self.reset()

    def reset(self) -> None:
        """Forgets every accumulated prediction."""
        self._grids = {}
        self._preds = {}

    def update(
        self, inputs: np.ndarray, preds: np.ndarray, q_halt_logits: np.ndarray, puzzle_identifiers: np.ndarray
    ) -> None:
        """Adds one batch.

        Args:
          inputs: [B, 900] input tokens (used to tell the test inputs of a puzzle apart).
          preds: [B, 900] predicted tokens.
          q_halt_logits: [B] halting logits (confidence = sigmoid, in float64).
          puzzle_identifiers: [B] identifier ids; rows equal to the blank id are skipped.
        """
        inputs = np.asarray(inputs)
        preds = np.asarray(preds)
        q = _sigmoid64(np.asarray(q_halt_logits).reshape(-1))
        ids = np.asarray(puzzle_identifiers).reshape(-1)
        batch = ids.shape[0]
        if inputs.shape[0] != batch or preds.shape[0] != batch or q.shape[0] != batch:
            raise ValueError(
                f"batch sizes differ: inputs {inputs.shape}, preds {preds.shape}, "
                f"q_halt_logits {q.shape}, puzzle_identifiers {ids.shape}"
            )
        keep = np.nonzero(ids != self.blank_identifier_id)[0]
        bad = ids[keep][(ids[keep] < 0) | (ids[keep] >= len(self.identifiers))]
        if bad.size:
            raise ValueError(
                f"puzzle identifier {int(bad[0])} is outside identifiers.json (0..{len(self.identifiers) - 1})"
            )
        input_rows, input_cols = crop_sizes(inputs[keep])
        pred_rows, pred_cols = crop_sizes(preds[keep])
        for i, row in enumerate(keep):
            original, augmentation = self._decoded_names[int(ids[row])]
            input_grid = cropped_grid(inputs[row], input_rows[i], input_cols[i])
            pred_grid = cropped_grid(preds[row], pred_rows[i], pred_cols[i])
            if augmentation is not None:
                input_grid = augmentation.invert(input_grid)
                pred_grid = augmentation.invert(pred_grid)
            pred_key = grid_hash(pred_grid)
            self._grids[pred_key] = pred_grid
            by_input = self._preds.setdefault(original, {})
            by_input.setdefault(grid_hash(input_grid), []).append((pred_key, float(q[row])))

    def state(self) -> dict[str, Any]:
        """The accumulated state, picklable, for gathering from other processes."""
        return {"grids": self._grids, "preds": self._preds}

    def merge(self, state: Mapping[str, Any]) -> None:
        """Appends another process's ``state()`` after this one's (call in process-rank order)."""
        for key, grid in state["grids"].items():
            self._grids.setdefault(key, grid)
        for name, by_input in state["preds"].items():
            mine = self._preds.setdefault(name, {})
            for input_key, entries in by_input.items():
                mine.setdefault(input_key, []).extend(entries)

    # ------------------------------------------------------------------------------------------
    # Scoring

    def _ranked(self, name: str, input_key: str) -> list[tuple[str, int, float]]:
        """Distinct predictions for one test input as (hash, votes, mean confidence), best first."""
        stats: dict[str, list[float]] = {}
        for pred_key, q in self._preds.get(name, {}).get(input_key, []):
            entry = stats.setdefault(pred_key, [0, 0.0])
            entry[0] += 1
            entry[1] += q
        ranked = [(key, int(votes), total / votes) for key, (votes, total) in stats.items()]
        # Python's sort is stable, so equal (votes, mean) keep first-seen order.
        ranked.sort(key=lambda item: (item[1], item[2]), reverse=True)
        return ranked

    def result(self) -> dict[str, float]:
        """pass@k over the test puzzles, as ``{"ARC/pass@k": fraction}``."""
        return self._score()[0]

    def submission(self) -> dict[str, list[dict[str, list[list[int]]]]]:
        """ARC Prize submission: ``{task_id: [{"attempt_1": grid, "attempt_2": grid, ...}, ...]}``.

        One entry per test input that received predictions; attempts beyond the number of distinct
        predictions repeat the best one.
        """
        return self._score()[1]

    def _score(self) -> tuple[dict[str, float], dict[str, list[dict[str, list[list[int]]]]]]:
        correct = np.zeros(len(self.pass_ks), dtype=np.float64)
        submission: dict[str, list[dict[str, list[list[int]]]]] = {}
        for name, pairs in self._test_pairs.items():
            entries = []
            solved = np.zeros(len(self.pass_ks), dtype=np.int64)
            for input_key, label_key in pairs:
                ranked = self._ranked(name, input_key)
                if not ranked:
                    continue  # no prediction for this test input: unsolved, no submission entry
                keys = [key for key, _, _ in ranked]
                for i, k in enumerate(self.pass_ks):
                    solved[i] += label_key in keys[:k]
                attempts = [self._grids[key] for key in keys[: self.submission_k]]
                attempts += [attempts[0]] * (self.submission_k - len(attempts))
                entries.append({f"attempt_{i + 1}": grid.astype(int).tolist() for i, grid in enumerate(attempts)})
            submission[name] = entries
            if pairs:
                correct += solved / len(pairs)
        num_puzzles = max(len(self._test_pairs), 1)
        metrics = {f"ARC/pass@{k}": float(correct[i] / num_puzzles) for i, k in enumerate(self.pass_ks)}
        return metrics, submission

    def write_submission(self, out_dir: str) -> str:
        """Writes ``out_dir/submission.json`` atomically (temp file + rename); returns its path."""
        path = os.path.join(out_dir, SUBMISSION_FILENAME)
        write_json_atomic(path, self.submission(), indent=None, sort_keys=False)
        return path
