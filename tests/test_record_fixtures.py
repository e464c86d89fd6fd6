"""The fixture recorder (tests/fixtures/record.py) against a checkout of the official code.

Skipped, with the reason, unless ``TRM_REFERENCE_DIR`` names a checkout. A fresh recording of
the official code (other random weights than the committed files) must pass the parity replay,
in float32 and, in a 64-bit subprocess, in float64 at 1e-9.
"""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

import test_parity
from trm_test_utils import needs_reference, reference_dir

NEEDS_REFERENCE = needs_reference("record fixtures from the official code")
RECORDER = pathlib.Path(__file__).parent / "fixtures" / "record.py"


def _recorder():
    spec = importlib.util.spec_from_file_location("trm_fixture_recorder", RECORDER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recorder_rejects_unknown_fixtures():
    with pytest.raises(SystemExit):
        _recorder().parse_args(["--reference-dir", "/nowhere", "--only", "trm_nope"])


@NEEDS_REFERENCE
def test_a_fresh_recording_passes_the_parity_replay(tmp_path):
    pytest.importorskip("torch")
    paths = _recorder().main(
        [
            "--reference-dir",
            reference_dir(),
            "--out",
            str(tmp_path),
            "--only",
            "trm_att_explore",
            "trm_mlp_t_softmax",
            "--seed",
            "7",
        ]
    )
    for path in paths:
        fixture = test_parity.Fixture(path)
        test_parity.test_weights_round_trip(fixture)
        test_parity.test_three_training_steps(fixture)
        test_parity.test_evaluation_to_halt(fixture)


@NEEDS_REFERENCE
def test_a_fresh_float64_recording_passes_at_1e_9(tmp_path):
    pytest.importorskip("torch")
    import test_parity_float64 as f64  # noqa: PLC0415
    from test_train_step import TESTS_DIR, run_with_devices  # noqa: PLC0415

    _recorder().main(
        ["--reference-dir", reference_dir(), "--out", str(tmp_path), "--float64", "--only", "trm_mlp_t", "--seed", "7"]
    )
    out = run_with_devices(
        f64.SCRIPT.format(tests=str(TESTS_DIR), rtol=f64.RTOL, atol=f64.ATOL, directory=str(tmp_path)),
        devices=1,
        x64=True,
    )
    assert "FLOAT64_PARITY_OK" in out
