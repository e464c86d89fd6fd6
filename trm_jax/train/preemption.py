"""Stopping on SIGINT/SIGTERM at a step every process agrees on (before the training loop the
signals interrupt the run instead: :mod:`trm_jax.signals`)."""

from __future__ import annotations

import signal
import threading
from typing import Any, Callable

import jax
import numpy as np

from trm_jax.train import parallel


class StopSignal:
    """SIGINT/SIGTERM as a flag, and the step at which every process stops for it.

    A handler (main thread only) records the signal; :meth:`poll` is called after every step
    and says when to stop. One process stops at the step it was signalled. Several processes
    must stop at the same step, or one enters the checkpoint barrier while another waits in the
    next step's all-reduce and the job hangs; they all get SIGTERM, but at different steps. So
    every ``check_every`` steps each process dispatches a tiny all-reduce (max) of its signal
    number, behind the step it just dispatched, and reads the result one step later (the host
    then waits for that step only, still one step ahead of the device), so every process sees
    the same value at the same step. A stop is thus agreed one step after a check that saw a signal; all
    processes stop with the largest signal number any of them got (SIGTERM over SIGINT).
    """

    def __init__(self, mesh: jax.sharding.Mesh, check_every: int) -> None:
        self.received: signal.Signals | None = None  # this process's first signal
        self._previous: dict[int, Any] = {}
        self._multi = jax.process_count() > 1
        self._mesh, self._check_every = mesh, check_every
        self._pending: jax.Array | None = None  # the reduction dispatched at the last check
        self._flags: dict[int, jax.Array] = {}  # this process's shards of the flag array, by value
        self._reduce: Callable | None = None

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now (other processes are left waiting)
        if self.received is None:
            self.received = signal.Signals(signum)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def poll(self, step: int) -> signal.Signals | None:
        """The signal to stop for after ``step`` (the same on every process), or None.

        Every process calls it after dispatching each step, with the same ``step``.
        """
        if not self._multi:
            return self.received
        if self._pending is not None:
            agreed = int(np.asarray(self._pending.addressable_data(0)))
            self._pending = None
            if agreed:
                return signal.Signals(agreed)
        if step % self._check_every == 0:
            self._pending = self._all_max(int(self.received or 0))
        return None

    def _all_max(self, value: int) -> jax.Array:
        if self._reduce is None:
            from jax.sharding import NamedSharding, PartitionSpec  # noqa: PLC0415

            self._reduce = jax.jit(jax.numpy.max, out_shardings=NamedSharding(self._mesh, PartitionSpec()))
        if value not in self._flags:  # one transfer per distinct value, not one per check
            local = np.full((len(self._mesh.local_devices),), value, np.int32)
            self._flags[value] = jax.make_array_from_process_local_data(
                parallel.batch_sharding(self._mesh), local, (self._mesh.size,)
            )
        return self._reduce(self._flags[value])
