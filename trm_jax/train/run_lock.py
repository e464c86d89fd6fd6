"""One writer per run directory: the lock ``trm-jax train`` holds on ``WORKDIR/.trm-jax.lock``.

Two trainers writing one run directory (a second terminal, a requeued job whose first copy
still runs) would interleave checkpoints, metrics and ``config.json``. The process that
trains (process 0 of a multi-host run) holds an exclusive ``flock`` on the lock file, which
the kernel releases when the process ends in any way (SIGKILL and the OOM killer included),
and writes who it is into it (pid, host, start time). A second trainer is refused with one
line naming the holder. A lock file whose holder is gone is taken over:

* same host: the flock is free and the recorded pid is not alive;
* another host (a run directory on a shared filesystem): the flock is free and the holder
  has not refreshed the file for :data:`STALE_AFTER_S` seconds (a live trainer touches it at
  every log line, :meth:`RunLock.heartbeat`). Where a filesystem does not carry flocks across
  hosts (gcsfuse), this heartbeat is what keeps a second host out.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = ".trm-jax.lock"
STALE_AFTER_S = 600.0  # a holder on another host silent this long is taken for dead


class RunLockedError(ValueError):
    """Another live trainer holds the run directory (one line: who, and what to do)."""


class RunLock:
    """The exclusive lock of a run directory (:meth:`acquire` / :meth:`release`, or ``with``)."""

    def __init__(self, workdir: str | os.PathLike):
        self.workdir = Path(workdir)
        self.path = self.workdir / LOCK_NAME
        self._fd: int | None = None
        self._created_workdir = False
        self._last_beat = 0.0

    def acquire(self) -> "RunLock":
        """Takes the lock or raises :class:`RunLockedError`; creates the run directory."""
        self._created_workdir = not self.workdir.exists()
        self.workdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunLockedError(self._refusal(_read_holder(fd))) from None
            holder = _read_holder(fd)
            if holder and self._holder_alive(holder):
                raise RunLockedError(self._refusal(holder))
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(_me()).encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            self._remove_created_workdir()
            raise
        self._fd = fd
        self._last_beat = time.monotonic()
        return self

    def heartbeat(self, every_s: float = 60.0) -> None:
        """Refreshes the lock file's time (at most every ``every_s`` seconds): the sign of life
        a trainer on another host of a shared filesystem looks for."""
        if self._fd is not None and time.monotonic() - self._last_beat >= every_s:
            os.utime(self.path)
            self._last_beat = time.monotonic()

    def release(self) -> None:
        """Removes the lock file and frees the lock (a run directory created by :meth:`acquire`
        and left empty is removed too)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None
        self._remove_created_workdir()

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _remove_created_workdir(self) -> None:
        if self._created_workdir:
            try:
                self.workdir.rmdir()  # only when empty
            except OSError:
                pass

    def _holder_alive(self, holder: dict) -> bool:
        """Whether the process a lock file names may still run although its flock is free: never
        on this host (the kernel holds a live process's flock), and on another host while it
        has refreshed the file within :data:`STALE_AFTER_S` seconds."""
        if holder.get("host") == socket.gethostname():
            return False
        return self._silent_s() < STALE_AFTER_S

    def _silent_s(self) -> float:
        try:
            return time.time() - self.path.stat().st_mtime
        except OSError:
            return float("inf")

    def _refusal(self, holder: dict | None) -> str:
        who = (
            f"pid {holder.get('pid')} on host {holder.get('host')}, since {holder.get('started')}"
            if holder
            else "a process that has not written its name yet"
        )
        stale = ""
        if holder and holder.get("host") != socket.gethostname():
            stale = (
                f"; its lock was refreshed {self._silent_s():.0f} s ago: if it is gone, remove {self.path} "
                f"or retry after {STALE_AFTER_S:.0f} s without a refresh"
            )
        return (
            f"{self.workdir} is in use by another trm-jax train ({who}): wait for it to finish or stop it, "
            f"or train in another --workdir{stale}"
        )


def _me() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _read_holder(fd: int) -> dict | None:
    try:
        text = os.pread(fd, 4096, 0).decode()
        holder = json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None
