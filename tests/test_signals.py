"""SIGINT/SIGTERM before the training loop: a signal whose exception is swallowed where its
handler ran (a garbage-collector callback, as jax's ``_xla_gc_callback`` did in CI) is not lost.

The end-to-end case (a run's compile) is in tests/test_faults.py; these are the library's pieces.
"""

from __future__ import annotations

import signal
import sys

import pytest

from trm_jax.data.format import atomic_output_dir
from trm_jax.signals import Interrupted, raise_if_interrupted, signals_interrupt
from trm_test_utils import sigterm_in_gc_callback


def swallow_sigterm_in_gc_callback(monkeypatch) -> list:
    """SIGTERM raised inside a gc callback (its handler runs there); returns what was swallowed."""
    swallowed: list = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: swallowed.append(unraisable.exc_value))
    sigterm_in_gc_callback()
    return swallowed


def test_a_swallowed_signal_is_raised_at_the_next_check(monkeypatch):
    with signals_interrupt():
        raise_if_interrupted()  # nothing yet
        swallowed = swallow_sigterm_in_gc_callback(monkeypatch)
        assert [type(e) for e in swallowed] == [Interrupted]  # lost where it was raised...
        with pytest.raises(Interrupted) as err:
            raise_if_interrupted()  # ...and raised here
        assert err.value.signal == signal.SIGTERM
    raise_if_interrupted()  # the context is left: forgotten, handlers restored
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_swallowed_signal_commits_no_output_directory(monkeypatch, tmp_path):
    out = tmp_path / "dataset"
    with pytest.raises(Interrupted), signals_interrupt():
        with atomic_output_dir(out) as tmp:
            (tmp / "part.npy").write_bytes(b"half")
            assert swallow_sigterm_in_gc_callback(monkeypatch)
    assert list(tmp_path.iterdir()) == []


def test_nested_contexts_keep_the_signal_until_the_outermost_exits(monkeypatch):
    with signals_interrupt():
        with signals_interrupt():  # a train that builds its dataset
            swallow_sigterm_in_gc_callback(monkeypatch)
        with pytest.raises(Interrupted):
            raise_if_interrupted()
