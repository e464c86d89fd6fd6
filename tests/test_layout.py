"""The package's shape, as a reviewer checks it: imports flow one way and modules stay small.

Data flows config -> data -> state -> step -> metrics/checkpoint; a module may import only
from layers below its own, so a reader can follow a run without climbing back up. The layers
are the package's top-level units (a sub-package counts as one unit).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "trm_jax"

# Lowest first. A unit imports only from units of a lower layer (or from itself).
LAYERS: list[set[str]] = [
    {"fileio", "precision", "signals"},
    {"config", "config_overrides", "data"},
    {"model", "configs", "losses", "trajectories"},
    {"experiments", "interop", "inference"},
    {"train"},
    {"plan"},
    {"cli"},
    {"__main__"},
]
MAX_LINES = 460  # in ruff format's layout, which gives each argument of a long call its own line


def _unit(module: str) -> str:
    """``trm_jax.train.loop`` -> ``train``; ``trm_jax.fileio`` -> ``fileio``."""
    return module.split(".")[1]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """The trm_jax modules that ``path`` imports (at module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("trm_jax"):
            if node.module == "trm_jax":
                found.update(f"trm_jax.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("trm_jax."))
    return found


def _layer(unit: str) -> int:
    for index, units in enumerate(LAYERS):
        if unit in units:
            return index
    raise AssertionError(f"trm_jax.{unit} is in no layer of tests/test_layout.py: add it to LAYERS")


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_from_lower_layers(path):
    module = _module_name(path)
    unit = _unit(module)
    upward = sorted(name for name in _imports(path) if _unit(name) != unit and _layer(_unit(name)) >= _layer(unit))
    assert not upward, f"{module} (layer {_layer(unit)}) imports from the same or a higher layer: {upward}"


def test_modules_stay_small():
    long = {str(p.relative_to(PACKAGE)): n for p in SOURCES if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by job): {long}"


def test_the_check_sees_an_upward_import(tmp_path):
    """The layer rule is not vacuous: a data module importing the trainer is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from trm_jax.train import loop\n")
    names = _imports(bad)
    assert names == {"trm_jax.train"}
    assert _layer(_unit("trm_jax.train")) >= _layer(_unit("trm_jax.data"))
