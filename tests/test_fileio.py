"""trm_jax.fileio: atomic writes (all or nothing, readable permissions) and JSON reads."""

from __future__ import annotations

import os
import stat

import pytest

from trm_jax.fileio import atomic_write, atomic_write_with, read_json, write_json_atomic


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_write_then_read_json(tmp_path):
    path = write_json_atomic(tmp_path / "sub" / "a.json", {"b": 1, "a": [1, 2]})
    assert read_json(path) == {"a": [1, 2], "b": 1}
    umask = os.umask(0)
    os.umask(umask)
    assert _mode(path) == 0o666 & ~umask  # not tempfile's 0600
    assert os.listdir(tmp_path / "sub") == ["a.json"]


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write("half")
            raise RuntimeError("crash")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]

    def failing_writer(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write("half a picture")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        atomic_write_with(tmp_path / "b.png", failing_writer)
    assert sorted(os.listdir(tmp_path)) == ["a.txt"]
    assert atomic_write_with(tmp_path / "c.png", lambda tmp: open(tmp, "w").close()).is_file()


def test_read_json_errors_name_the_file(tmp_path):
    class Bad(ValueError):
        pass

    with pytest.raises(Bad, match=r"nope.json: file not found \(expected the config\)"):
        read_json(tmp_path / "nope.json", Bad, "the config")
    (tmp_path / "x.json").write_text("{bad")
    with pytest.raises(Bad, match="x.json: malformed JSON") as info:
        read_json(tmp_path / "x.json", Bad)
    assert "\n" not in str(info.value)
    (tmp_path / "y.json").write_bytes(b"\xff\xfe")
    with pytest.raises(Bad, match="y.json: not UTF-8"):
        read_json(tmp_path / "y.json", Bad)
