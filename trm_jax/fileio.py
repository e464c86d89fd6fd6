"""Writing files atomically and reading JSON with errors that name the file.

Every file trm-jax writes goes through :func:`atomic_write`: the content is written to a
temporary file in the same directory and renamed into place, so a crash leaves either the old
file or the new one, never half of one. Files are created readable by everyone (0644, less the
process umask) like any file a program writes, not 0600 as ``tempfile`` makes them: a run
directory is meant to be shared.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator

_FILE_MODE = 0o666  # before the umask, as open() creates files


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _temp_beside(path: Path, suffix: str) -> Iterator[str]:
    """A temporary file name beside ``path``; on a clean exit the file replaces ``path``.

    The parent directory is created. On an exception the temporary file is removed and
    ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _FILE_MODE & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """Opens a temporary file beside ``path``; on a clean exit it replaces ``path``.

    ``mode`` is ``"w"`` (text) or ``"wb"``; ``open_kwargs`` go to :func:`open` (``newline``,
    ``encoding``). The parent directory is created. On an exception the temporary file is
    removed and ``path`` is left as it was.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
    with _temp_beside(Path(path), ".tmp") as tmp, open(tmp, mode, **open_kwargs) as f:
        yield f


def make_temp_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A new directory in ``parent`` (``tempfile.mkdtemp``), readable by everyone (0755 less the
    umask, as ``mkdir`` creates directories) rather than ``mkdtemp``'s 0700: it becomes an output."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(path, 0o777 & ~_umask())
    return path


def atomic_write_with(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Calls ``write(tmp_path)`` for a writer that wants a file name (e.g. ``savefig``), atomically."""
    path = Path(path)
    with _temp_beside(path, path.suffix or ".tmp") as tmp:
        write(tmp)
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int | None = 2, sort_keys: bool = True) -> Path:
    """Writes ``obj`` as JSON to ``path`` atomically; returns the path."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=indent, sort_keys=sort_keys)
        f.write("\n")
    return Path(path)


def read_json(path: str | os.PathLike, error: type[Exception] = ValueError, what: str = "") -> Any:
    """The JSON value in ``path``; a missing, unreadable or malformed file raises ``error``.

    The message is one line naming the file (and ``what`` it should hold, when given).
    """
    path = Path(path)
    expected = f" (expected {what})" if what else ""
    if not path.is_file():
        raise error(f"{path}: file not found{expected}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise error(f"{path}: malformed JSON ({err}){expected}") from None
    except UnicodeDecodeError as err:
        raise error(f"{path}: not UTF-8 text ({err}){expected}") from None
    except OSError as err:
        raise error(f"{path}: cannot be read ({err.strerror}){expected}") from None
