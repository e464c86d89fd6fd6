"""The training loop on a tiny generated Sudoku dataset (trm_jax.train.loop)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
from pathlib import Path

import jax
import numpy as np
import pytest

from trm_jax import configs as configs_lib
from trm_jax.data.sudoku import build_sudoku_dataset
from trm_jax.train import loop
from trm_jax.train.checkpoint import Checkpointer
from trm_jax.train.metrics_log import read_metrics
from trm_test_utils import tiny_run_config as tiny_config

SUDOKU_CSV = Path(__file__).parent / "data" / "sudoku_small"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """5 training puzzles x 4 (3 augmentations), 3 test puzzles."""
    out = tmp_path_factory.mktemp("loop") / "sudoku"
    return build_sudoku_dataset(out, source_dir=SUDOKU_CSV, hub_repo=None, num_aug=3, seed=0)


def final_state(workdir: Path) -> tuple[dict, dict]:
    with Checkpointer(workdir / loop.CHECKPOINT_DIR, async_save=False) as ckpt:
        return ckpt.restore(ckpt.latest_step())


def test_train_writes_run_directory(dataset, tmp_path):
    result = loop.train(tiny_config(dataset, **{"train.tensorboard": True}), tmp_path / "run")
    run = tmp_path / "run"
    assert (result.step, result.total_steps, result.interrupted) == (12, 12, False)
    config = json.loads((run / "config.json").read_text())
    assert (config["model"]["seq_len"], config["model"]["vocab_size"]) == (81, 11)
    assert config["optim"]["total_steps"] == 12
    with Checkpointer(run / "checkpoints") as ckpt:
        assert ckpt.all_steps() == [6, 12]
    _, extras = final_state(run)
    assert extras["loader"]["batch"] + 0 >= 0 and extras["step"] == 12
    series = read_metrics(run / "metrics.csv")
    assert [s for s, _ in series["train/loss"]] == [3, 6, 9, 12]
    assert [s for s, _ in series["eval/accuracy"]] == [6, 12]
    assert all(np.isfinite(v) for _, v in series["train/loss"])
    assert 0.0 <= result.eval_metrics["accuracy"] <= 1.0 and result.eval_metrics["count"] == 3
    assert (run / "curves.png").stat().st_size > 0
    if importlib.util.find_spec("tensorboardX") is not None:  # the dev extra installs it
        assert list((run / "tensorboard").iterdir())
    else:
        assert not (run / "tensorboard").exists()

    # The same run again without resume: refused, nothing overwritten.
    before = (run / "config.json").read_text(), (run / "metrics.csv").read_text()
    with pytest.raises(loop.RunDirError, match="already holds checkpoints: pass --resume"):
        loop.train(tiny_config(dataset), run)
    assert ((run / "config.json").read_text(), (run / "metrics.csv").read_text()) == before


def test_resume_is_bit_exact(dataset, tmp_path):
    config = tiny_config(dataset, **{"train.eval_every_steps": 12})
    loop.train(config, tmp_path / "straight")
    first = loop.train(config, tmp_path / "split", stop_at=6)
    assert first.interrupted and first.step == 6 and first.stop_signal is None
    second = loop.train(config, tmp_path / "split", resume=True)
    assert second.step == 12 and not second.interrupted
    (a, extras_a), (b, extras_b) = final_state(tmp_path / "straight"), final_state(tmp_path / "split")
    assert extras_a["loader"] == extras_b["loader"]
    leaves_a = jax.tree_util.tree_leaves_with_path(a)
    leaves_b = dict(jax.tree_util.tree_leaves_with_path(b))
    assert len(leaves_a) == len(leaves_b)
    for path, value in leaves_a:
        other = leaves_b[path]
        if jax.dtypes.issubdtype(getattr(value, "dtype", None), jax.dtypes.prng_key):
            value, other = jax.random.key_data(value), jax.random.key_data(other)
        np.testing.assert_array_equal(np.asarray(value), np.asarray(other), err_msg=jax.tree_util.keystr(path))


def test_sigterm_stops_at_the_step_with_a_checkpoint(dataset, tmp_path):
    """A signal sent from the on_step hook: the run saves that step and says which signal."""
    seen = []

    def hook(step: int) -> None:
        seen.append(step)
        if step == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    result = loop.train(tiny_config(dataset), tmp_path, on_step=hook)
    assert (result.step, result.interrupted, result.stop_signal) == (4, True, signal.SIGTERM)
    assert seen == [1, 2, 3, 4]
    assert signal.getsignal(signal.SIGTERM) is before
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        assert ckpt.all_steps() == [4]
    finished = loop.train(tiny_config(dataset), tmp_path, resume=True)
    assert (finished.step, finished.interrupted, finished.stop_signal) == (12, False, None)


def test_batch_larger_than_dataset_fails_clearly(dataset, tmp_path):
    with pytest.raises(loop.RunDirError, match="fewer examples than config.optim.global_batch_size=64"):
        loop.train(tiny_config(dataset, **{"optim.global_batch_size": 64}), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_model_without_puzzle_embeddings_trains_and_resumes(dataset, tmp_path):
    """puzzle_emb_ndim=0 leaves an empty [N, 0] table in the state; it checkpoints and resumes."""
    config = tiny_config(dataset, **{"model.puzzle_emb_ndim": 0, "optim.total_steps": 6, "train.eval_every_steps": 3})
    loop.train(config, tmp_path / "run", stop_at=3)
    result = loop.train(config, tmp_path / "run", resume=True)
    assert result.step == 6
    state, _ = final_state(tmp_path / "run")
    assert np.asarray(state["buffers"]["puzzle_emb"]).shape[1] == 0


def test_missing_dataset(tmp_path):
    with pytest.raises(loop.RunDirError, match="does not exist"):
        loop.train(tiny_config(tmp_path / "nowhere"), tmp_path / "run")


def test_nan_loss_stops_the_run(dataset, tmp_path):
    config = tiny_config(dataset, **{"optim.lr": float("nan"), "optim.lr_warmup_steps": 0, "optim.total_steps": 4})
    with pytest.raises(loop.TrainingError, match="loss is nan at step 2"):
        loop.train(config, tmp_path)


def test_pmap_mode_trains(dataset, tmp_path):
    config = tiny_config(dataset, **{"train.parallel": "pmap", "optim.total_steps": 4, "train.eval_every_steps": 4})
    result = loop.train(config, tmp_path)
    assert result.step == 4 and np.isfinite(result.train_metrics["loss"])
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        assert ckpt.all_steps() == [4]


def test_eval_interval_in_epochs():
    config = configs_lib.load_config("sudoku_mlp")
    # 50k epochs, evaluation every 5k epochs: ten evaluations over the run.
    assert loop.eval_every_steps(config, 1_000_000) == 100_000
    config.train.eval_every_steps = 7
    assert loop.eval_every_steps(config, 1_000_000) == 7


def test_no_device_reads_between_log_steps(dataset, tmp_path, monkeypatch):
    """The host reads device values only at log/eval/stop steps (log_every=3, eval every 6).

    Every host read of a jax.Array (float(), int(), device_get, tolist) goes through
    ``ArrayImpl._value``; counting it around the loop's per-step host work (and, on GPU/TPU,
    the transfer guard) catches a read that would make the host wait on the step it just
    dispatched. The probe in on_step checks that the counter does see a read.
    """
    array_type = type(jax.numpy.zeros(1))
    original = array_type._value
    reads: list[int] = []

    def counted(self):
        reads.append(1)
        return original.fget(self)

    @contextlib.contextmanager
    def guarded():
        with jax.transfer_guard_device_to_host("disallow_explicit"):
            before = len(reads)
            yield
            inside.append(len(reads) - before)

    inside: list[int] = []
    probed = []

    def hook(step: int) -> None:
        if step == 1:  # the probe: a read here must be seen (then forgotten)
            before = len(reads)
            try:
                float(jax.numpy.ones(()) + 1)
            except Exception:  # noqa: BLE001 - the transfer guard on accelerators
                reads.append(1)
            probed.append(len(reads) - before)
            del reads[before:]

    monkeypatch.setattr(array_type, "_value", property(counted))
    monkeypatch.setattr(loop, "step_context", guarded)
    result = loop.train(tiny_config(dataset), tmp_path, on_step=hook)
    monkeypatch.undo()
    assert result.step == 12 and probed == [1]
    assert inside == [0] * 12
    assert reads, "the log steps read the metric window"


def test_relative_dataset_dir_is_stored_absolute(dataset, tmp_path, monkeypatch):
    """config.json holds the dataset path resolved at the first run, so a resume from another
    current directory reads the same data instead of looking (or generating) elsewhere."""
    monkeypatch.chdir(dataset.parent)
    config = tiny_config(Path(dataset.name), **{"optim.total_steps": 4, "train.eval_every_steps": 4})
    loop.train(config, tmp_path / "run", stop_at=2)
    saved = configs_lib.config_from_json(tmp_path / "run" / loop.CONFIG_NAME)
    assert saved.data.dataset_dir == str(dataset.absolute())
    monkeypatch.chdir(tmp_path)
    result = loop.train(saved, tmp_path / "run", resume=True)
    assert result.step == 4 and not (tmp_path / dataset.name).exists()


def test_resuming_a_finished_run_says_so(dataset, tmp_path, capsys):
    config = tiny_config(dataset, **{"optim.total_steps": 2, "train.eval_every_steps": 2, "train.progress_bar": False})
    loop.train(config, tmp_path)
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert "CPU device(s)" in first and "parameters" in first and "per device" in first
    assert f"checkpoints: {tmp_path / 'checkpoints'}" in out and str(tmp_path / "metrics.csv") in out
    result = loop.train(config, tmp_path, resume=True)
    out = capsys.readouterr().out
    assert result.step == 2 and "already finished at step 2/2: nothing to train" in out
    assert "training" not in out.split("nothing to train")[0]
