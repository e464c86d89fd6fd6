"""The Colab notebook (colab/trm_jax_colab.ipynb), executed end to end on CPU with tiny settings.

The kernel sees two CPU devices (XLA_FLAGS), so the notebook's "train on all devices" path is
exercised with a real two-device mesh.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "colab" / "trm_jax_colab.ipynb"
GENERATOR = ROOT / "colab" / "make_notebook.py"
KERNEL = "trm-jax-test"
DEVICES = 2


def _generator():
    spec = importlib.util.spec_from_file_location("trm_jax_make_notebook", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_committed_notebook_matches_generator_and_has_no_outputs():
    assert NOTEBOOK.read_text() == _generator().notebook_text(), (
        "colab/trm_jax_colab.ipynb is out of date: run python colab/make_notebook.py"
    )
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert all(c.metadata.get("tags") for c in code)


@pytest.fixture
def kernel_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec running this interpreter (the installed "python3" may be another Python)."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "trm-jax test",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


def _outputs_by_tag(nb) -> dict[str, list]:
    return {c.metadata["tags"][0]: c.outputs for c in nb.cells if c.cell_type == "code"}


def _text(outputs: list) -> str:
    return "".join(o.get("text", "") for o in outputs if o.output_type == "stream")


def _images(outputs: list) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs if o.output_type in ("display_data", "execute_result"))


def test_notebook_runs_end_to_end(tmp_path: Path, kernel_name: str, monkeypatch: pytest.MonkeyPatch):
    workdir = tmp_path / "run"
    monkeypatch.setenv("TRM_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("TRM_NOTEBOOK_SKIP_INSTALL", "1")
    monkeypatch.setenv("TRM_NOTEBOOK_WORKDIR", str(workdir))
    monkeypatch.setenv("TRM_NOTEBOOK_REPO_DIR", str(ROOT))  # a local copy (not installed: SKIP_INSTALL)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv(
        "XLA_FLAGS", (os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={DEVICES}").strip()
    )

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name=kernel_name, timeout=300, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError naming the failing cell

    outputs = _outputs_by_tag(nb)
    errors = [tag for tag, outs in outputs.items() if any(o.output_type == "error" for o in outs)]
    assert not errors, f"cells with errors: {errors}"

    assert f"{DEVICES} device(s)" in _text(outputs["devices"])
    assert "stopped at step 40/40" in _text(outputs["train"])
    assert "matches the accuracy logged during training at step 40" in _text(outputs["evaluate"])
    assert "solved exactly:" in _text(outputs["puzzles"])
    assert "valid solution:" in _text(outputs["predict"])

    assert "depth curve: exact accuracy by test-time supervision steps" in _text(outputs["curves"])

    # Figures: a dataset example, the curves and the depth curve, up to three test puzzles (6
    # here), the new puzzle.
    assert _images(outputs["dataset"]) == 1
    assert _images(outputs["curves"]) == 2
    assert _images(outputs["puzzles"]) == 3
    assert _images(outputs["predict"]) == 1

    # The run directory the notebook trained into.
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [20, 40]
    config = json.loads((workdir / "config.json").read_text())
    assert config["optim"]["global_batch_size"] % DEVICES == 0 and config["optim"]["total_steps"] == 40
    assert (workdir / "metrics.csv").stat().st_size > 0
    assert (workdir / "curves.png").stat().st_size > 0
    assert (workdir / "data" / "test" / "dataset.json").is_file()
