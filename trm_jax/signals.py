"""SIGINT/SIGTERM as an exception: how long work outside the training loop (dataset building,
generation, compilation) stops cleanly.

Python turns only SIGINT into an exception (``KeyboardInterrupt``); SIGTERM, what schedulers
and preemption send, kills the process on the spot, leaving temporary files behind. Within
:func:`signals_interrupt` both raise :class:`Interrupted`, so ``finally`` blocks and the
temporary-directory writers (:func:`trm_jax.data.format.atomic_output_dir`) clean up, and the
command exits with 128 + the signal number, as a shell reports a death by that signal. The
training loop installs its own handlers for its duration (:class:`trm_jax.train.preemption.StopSignal`:
stop at a step, with a checkpoint).

A handler's exception can be lost: Python runs the handler between any two bytecodes of the
main thread, also inside a garbage-collector callback, a ``__del__`` or a weakref finaliser,
where an exception is printed as "ignored" and execution goes on (jax's ``_xla_gc_callback``
swallowed a SIGTERM delivered right after an XLA compile). So the handler also records the
signal, and the code calls :func:`raise_if_interrupted` before it commits anything (a dataset's
rename, a run's first file, the training loop's start): a swallowed signal is raised there.
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


_received: list[signal.Signals] = []  # signals whose Interrupted has not yet left a signals_interrupt context
_depth = 0  # nested signals_interrupt contexts (a train that builds its dataset)


def raise_if_interrupted() -> None:
    """Raise :class:`Interrupted` if a signal arrived within :func:`signals_interrupt` and its
    exception was swallowed where the handler happened to run (a gc callback, a ``__del__``).

    Call it before committing work; outside the context, and when no signal came, it returns.
    """
    if _received:
        raise Interrupted(_received[0])


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within this context (main thread only), SIGINT and SIGTERM raise :class:`Interrupted`;
    the training loop's :class:`~trm_jax.train.preemption.StopSignal`, entered inside it,
    takes over until it exits."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    global _depth

    def interrupt(signum: int, frame: Any) -> None:
        _received.append(signal.Signals(signum))
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            _received.clear()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
