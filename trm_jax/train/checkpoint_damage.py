"""Telling a damaged checkpoint from other errors, quietly.

A checkpoint step whose files are missing, truncated or garbled fails inside orbax/tensorstore
with errors of several kinds; :func:`guarded_read` turns exactly those into
:class:`DamagedRead` (the caller names the step) and lets every other error through. When one
array read fails, orbax's other pending reads fail later, in other threads and at garbage
collection, each printing a traceback: they are held back while reading, replayed on success
and dropped on damage, so the user sees one error line.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import logging
import os
import re
import sys
import time
import types
from typing import Callable, Iterator, Sequence, TypeVar

_T = TypeVar("_T")


class CheckpointDamagedError(ValueError):
    """A checkpoint step cannot be read back: a file or item directory is missing, truncated or garbled.

    ``directory`` and ``step`` name the damaged checkpoint, ``reason`` says what could not be
    read, and ``intact_steps`` lists the older steps of the same directory that pass a quick
    check (their item directories exist and their JSON files parse), oldest first.
    """

    def __init__(self, directory: str, step: int, reason: str, intact_steps: Sequence[int] = ()):
        self.directory, self.step, self.reason = directory, int(step), reason
        self.intact_steps = [int(s) for s in intact_steps]
        older = ", ".join(map(str, self.intact_steps)) or "none"
        super().__init__(
            f"checkpoint step {step} in {directory} is damaged ({reason}); older steps that look intact: {older}"
        )

    @property
    def step_dir(self) -> str:
        """The damaged step's directory."""
        return os.path.join(self.directory, str(self.step))


# A tensorstore error (raised as ValueError) starts with its absl status code.
_TENSORSTORE_STATUS = re.compile(
    r"^(DATA_LOSS|OUT_OF_RANGE|FAILED_PRECONDITION|NOT_FOUND|INVALID_ARGUMENT|"
    r"UNKNOWN|INTERNAL|UNAVAILABLE|ABORTED): "
)


def _damage_reason(err: BaseException) -> str | None:
    """What a restore error says about damaged files, or None when it is not about damaged data.

    Walks the exception chain (orbax wraps tensorstore's errors in a bare ``Exception``) looking
    for tensorstore's status errors, malformed JSON and missing files.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = " ".join(str(current).split())
        if isinstance(current, json.JSONDecodeError):
            return f"malformed JSON: {text}"
        status = _TENSORSTORE_STATUS.match(text) if isinstance(current, ValueError) else None
        if status:  # long, innermost cause last: keep the status code and the end
            text = re.split(r" \[(?:source locations|tensorstore_spec)=", text)[0]  # drop the annotations
            return text if len(text) <= 300 else f"{status.group(0)}...{text[-(296 - len(status.group(0))) :]}"
        if isinstance(current, FileNotFoundError):
            return f"missing file: {text}"
        current = current.__cause__ or current.__context__
    return None


def _pending_orbax_coroutines() -> int:
    """How many of orbax's coroutines are suspended (not finished, not yet collected)."""
    return sum(
        1
        for obj in gc.get_objects()
        if isinstance(obj, types.CoroutineType) and obj.cr_frame is not None and "orbax" in obj.cr_code.co_filename
    )


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[tuple[io.StringIO, list]]:
    """Holds back what the block writes to ``sys.stderr``, unraisable errors and absl/asyncio log records.

    When orbax's restore fails on a damaged file, its other pending reads fail later, in other
    threads and at garbage collection, each printing a traceback; this keeps them off the
    user's terminal. The caller replays the held-back output when the block succeeds.
    """
    held, records = io.StringIO(), []

    class _Hold(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    loggers = [logging.getLogger(name) for name in ("absl", "asyncio")]
    saved_loggers = [(lg.handlers, lg.propagate) for lg in loggers]
    saved = sys.stderr, sys.unraisablehook
    sys.stderr = held
    sys.unraisablehook = lambda unraisable: held.write(f"(unraisable) {unraisable.exc_value!r}\n")
    hold = _Hold()
    for lg in loggers:
        lg.handlers, lg.propagate = [hold], False
    try:
        yield held, records
    finally:
        sys.stderr, sys.unraisablehook = saved
        for lg, (handlers, propagate) in zip(loggers, saved_loggers):
            lg.handlers, lg.propagate = handlers, propagate


def json_object(path: str) -> bool:
    """Whether ``path`` holds a JSON object (a readable dict)."""
    try:
        with open(path) as f:
            return isinstance(json.load(f), dict)
    except (OSError, ValueError):
        return False


class DamagedRead(Exception):
    """A read failed because the checkpoint's files are damaged; ``reason`` says how."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def guarded_read(read: Callable[[], _T]) -> _T:
    """``read()``, with errors about damaged files raised as :class:`DamagedRead`.

    Other errors propagate unchanged. Orbax's stderr noise is held back while reading: it is
    replayed when ``read`` succeeds and dropped when the checkpoint is damaged (then the orbax
    coroutines left pending by the failed read are collected before returning, so their
    tracebacks do not reach the terminal later).
    """
    reason = None
    with _quiet_stderr() as (held, records):
        try:
            result = read()
        except Exception as err:  # noqa: BLE001 - sorted by _damage_reason, others re-raised
            reason = _damage_reason(err)
            if reason is None:
                raise
            chained: BaseException | None = err
            while chained is not None:  # frees orbax's pending reads for collection
                chained.__traceback__ = None
                chained = chained.__cause__ or chained.__context__
        if reason is not None:
            deadline = time.monotonic() + 10.0
            while True:
                gc.collect()
                if not _pending_orbax_coroutines() or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
    if reason is not None:
        raise DamagedRead(reason)
    sys.stderr.write(held.getvalue())
    for record in records:
        logging.getLogger(record.name).handle(record)
    return result
