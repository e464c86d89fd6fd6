"""Progress of long dataset work on stderr: a full ARC build runs for minutes, and a user should
be able to tell it from a hang.

On a terminal, a tqdm bar (as training shows its steps), cleared when the work ends or fails;
elsewhere (a log file, a scheduler's output), a plain line when the work starts, one every 30
seconds, and one when it ends.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterable, Iterator, TypeVar

_T = TypeVar("_T")
LOG_EVERY_S = 30.0


@contextlib.contextmanager
def progress(items: Iterable[_T], *, total: int, desc: str, unit: str) -> Iterator[Iterable[_T]]:
    """``with progress(items, ...) as items: for item in items: ...``: ``items`` counted in
    ``unit``s on stderr while the block runs."""
    if sys.stderr.isatty():
        from tqdm.auto import tqdm  # noqa: PLC0415

        bar = tqdm(items, total=total, desc=desc, unit=f" {unit}", file=sys.stderr, dynamic_ncols=True, leave=False)
        try:
            yield bar
        finally:
            bar.close()
    else:
        yield _logged(items, total, desc, unit)


def _logged(items: Iterable[_T], total: int, desc: str, unit: str) -> Iterator[_T]:
    print(f"{desc}: 0/{total} {unit}s", file=sys.stderr, flush=True)
    last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        if time.monotonic() - last >= LOG_EVERY_S:
            print(f"{desc}: {done}/{total} {unit}s", file=sys.stderr, flush=True)
            last = time.monotonic()
    print(f"{desc}: done, {done} {unit}s", file=sys.stderr, flush=True)
