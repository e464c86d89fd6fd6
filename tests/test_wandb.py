"""Weights & Biases logging (train.wandb_project): an offline run, its resume, and wandb missing."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

from test_cli import SUDOKU_CSV
from test_cli import TINY as CLI_TINY
from trm_jax import cli
from trm_jax.data.sudoku import build_sudoku_dataset
from trm_jax.train.metrics_log import read_metrics
from trm_jax.train.wandb_log import ID_NAME, INSTALL, STEP_METRIC

# test_cli's tiny run, with a train line every 2 steps and no depth curve.
TINY = [*CLI_TINY, "--config.train.log_every=2", "--config.train.depth_curve_steps=0"]
PROJECT = "trm-test"


def wandb_records(path: Path):
    """The protobuf records of an offline run's ``run-ID.wandb`` file.

    The file is a LevelDB log (32 KiB blocks of chunks with a 7-byte header: CRC, length, type)
    after W&B's own 7-byte header; wandb no longer ships a Python reader for it.
    """
    wandb_pb2 = pytest.importorskip("wandb.proto.wandb_internal_pb2")
    data = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1), "not a W&B datastore"
    pos, chunks, block = 7, [], 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        chunks.append(data[pos + 7 : pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            yield record


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def offline_run(path: Path) -> dict:
    """The run id, config, history rows and summary that an offline run directory holds."""
    (store,) = path.glob("run-*.wandb")
    run_id, config, history, summary = None, {}, [], {}
    for record in wandb_records(store):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run_id = record.run.run_id
            config = {_key(u): json.loads(u.value_json) for u in record.run.config.update}
        elif kind == "history":
            history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            summary.update({_key(u): json.loads(u.value_json) for u in record.summary.update})
    return {"id": run_id, "config": config, "history": history, "summary": summary}


def logged(history: list[dict]) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of the rows W&B recorded (the last value per step)."""
    series: dict[str, dict[int, float]] = {}
    for row in history:
        for tag, value in row.items():
            if not tag.startswith("_") and tag != STEP_METRIC:
                series.setdefault(tag, {})[row[STEP_METRIC]] = value
    return series


@pytest.fixture
def wandb_env(monkeypatch, tmp_path) -> Path:
    """Offline W&B with every directory it writes inside ``tmp_path``; returns WANDB_DIR."""
    pytest.importorskip("wandb", reason="wandb is not installed (pip install 'trm-jax[wandb]')")
    root = tmp_path / "wandb_env"
    for name, sub in (
        ("WANDB_DIR", "dir"),
        ("WANDB_CACHE_DIR", "cache"),
        ("WANDB_CONFIG_DIR", "config"),
        ("WANDB_DATA_DIR", "data"),
        ("WANDB_ARTIFACT_DIR", "artifacts"),
    ):
        (root / sub).mkdir(parents=True)
        monkeypatch.setenv(name, str(root / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return root / "dir"


def test_offline_run_logs_every_scalar_and_resume_continues_it(wandb_env, tmp_path, capsys):
    dataset = build_sudoku_dataset(tmp_path / "sudoku", source_dir=SUDOKU_CSV, hub_repo=None, num_aug=3)
    workdir = tmp_path / "run"
    assert (
        cli.main(
            [
                "train",
                "--config",
                "quickstart",
                *TINY,
                f"--config.data.dataset_dir={dataset}",
                f"--config.train.wandb_project={PROJECT}",
                "--workdir",
                str(workdir),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    run_id = (workdir / ID_NAME).read_text().strip()
    assert f"W&B run {PROJECT}/{run_id}" in out
    (first_dir,) = (wandb_env / "wandb").glob(f"offline-run-*-{run_id}")
    first = offline_run(first_dir)
    assert first["id"] == run_id
    assert first["config"]["train"]["wandb_project"] == PROJECT
    stored = json.loads((workdir / "config.json").read_text())
    assert {k: v for k, v in first["config"].items() if not k.startswith("_")} == stored

    csv = read_metrics(workdir / "metrics.csv")
    assert {tag: dict(points) for tag, points in csv.items()} == logged(first["history"])
    assert sorted(dict(csv["train/loss"])) == [2, 4] and sorted(dict(csv["eval/accuracy"])) == [4]
    assert first["summary"]["train/loss"] == csv["train/loss"][-1][1]
    assert first["summary"]["eval/accuracy"] == csv["eval/accuracy"][-1][1]
    assert first["summary"][STEP_METRIC] == 4

    # Resumed to step 8: the same W&B run id, a second offline directory with steps 6 and 8.
    assert cli.main(["train", "--resume", "--config.optim.total_steps=8", "--workdir", str(workdir)]) == 0
    assert (workdir / ID_NAME).read_text().strip() == run_id
    dirs = sorted((wandb_env / "wandb").glob("offline-run-*"))
    assert len(dirs) == 2 and all(d.name.endswith(f"-{run_id}") for d in dirs)
    second = offline_run(next(d for d in dirs if d != first_dir))
    assert second["id"] == run_id and second["config"]["optim"]["total_steps"] == 8
    csv = read_metrics(workdir / "metrics.csv")
    resumed = logged(second["history"])
    assert sorted(resumed["train/loss"]) == [6, 8] and sorted(resumed["eval/accuracy"]) == [8]
    for tag, points in resumed.items():
        assert points == {s: v for s, v in csv[tag] if s > 4}, tag
    assert second["summary"]["train/loss"] == csv["train/loss"][-1][1]


def test_missing_wandb_is_one_line_naming_the_key(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    workdir = tmp_path / "run"
    rc = cli.main(
        [
            "train",
            "--config",
            "quickstart",
            *TINY,
            f"--config.data.dataset_dir={tmp_path / 'none'}",
            f"--config.train.wandb_project={PROJECT}",
            "--workdir",
            str(workdir),
        ]
    )
    assert rc == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert f"config.train.wandb_project={PROJECT!r}" in err and INSTALL in err
    assert not workdir.exists()
