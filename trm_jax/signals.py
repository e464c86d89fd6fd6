"""SIGINT/SIGTERM as an exception: how long work outside the training loop (dataset building,
generation, compilation) stops cleanly.

Python turns only SIGINT into an exception (``KeyboardInterrupt``); SIGTERM, what schedulers
and preemption send, kills the process on the spot, leaving temporary files behind. Within
:func:`signals_interrupt` both raise :class:`Interrupted`, so ``finally`` blocks and the
temporary-directory writers (:func:`trm_jax.data.format.atomic_output_dir`) clean up, and the
command exits with 128 + the signal number, as a shell reports a death by that signal. The
training loop installs its own handlers for its duration (:class:`trm_jax.train.preemption.StopSignal`:
stop at a step, with a checkpoint).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived outside the training loop (data generation, compilation).

    A ``BaseException``, like ``KeyboardInterrupt``: no ``except Exception`` swallows it, and
    what is being written into a temporary directory is removed on the way out.
    """

    def __init__(self, signum: int):
        self.signal = signal.Signals(signum)
        super().__init__(f"interrupted by {self.signal.name}")


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within this context (main thread only), SIGINT and SIGTERM raise :class:`Interrupted`;
    the training loop's :class:`~trm_jax.train.preemption.StopSignal`, entered inside it,
    takes over until it exits."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
