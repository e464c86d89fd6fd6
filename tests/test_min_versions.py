""".ci/min-versions.txt pins exactly the lower bounds of pyproject.toml (CI smoke-tests those pins)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
packaging = pytest.importorskip("packaging")
from packaging.requirements import Requirement  # noqa: E402
from packaging.utils import canonicalize_name  # noqa: E402
from packaging.version import Version  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def pins() -> dict[str, Version]:
    out = {}
    for line in (ROOT / ".ci" / "min-versions.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            out[canonicalize_name(req.name)] = Version(spec.version)
    return out


def test_min_versions_are_the_lower_bounds():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = pins()
    for line in project["dependencies"]:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        lower = [Version(s.version) for s in req.specifier if s.operator == ">="]
        assert len(lower) == 1, f"{line}: one >= lower bound expected"
        assert name in pinned, f"{name} is not pinned in .ci/min-versions.txt"
        assert pinned[name] == lower[0], f"{name}: pinned {pinned[name]}, lower bound {lower[0]}"
        assert req.specifier.contains(pinned[name]), f"{name}: pin {pinned[name]} excluded by {line}"
    extra = set(pinned) - {canonicalize_name(Requirement(line).name) for line in project["dependencies"]}
    assert extra == {"jaxlib"}, extra  # jaxlib: pinned by jax itself, to its own version
    assert pinned["jaxlib"] == pinned["jax"]


def test_requires_python_is_readable_by_ci():
    # .ci/min-versions.sh reads the Python floor with sed: keep requires-python a plain ">=X.Y" line.
    line = f'requires-python = "{tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]}"'
    assert re.fullmatch(r'requires-python = ">=\d+\.\d+"', line)
    assert line in (ROOT / "pyproject.toml").read_text().splitlines()
