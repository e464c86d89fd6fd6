"""Metric sums to means, and the window of training metrics kept on device between log lines.

The steps return metric *sums* (see :mod:`trm_jax.train.step`); :func:`sums_to_means` is the one
place they become means, for a single step, a window of training steps and an evaluation pass.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp

# Divided by ``count`` (the rows that halted, i.e. were scored).
RATE_KEYS = ("accuracy", "exact_accuracy", "q_halt_accuracy", "steps")
# Sums over examples: divided by ``examples``.
EXAMPLE_LOSS_KEYS = ("lm_loss", "q_halt_loss", "q_continue_loss")
# One value per step (``loss`` is already total / global batch): divided by ``steps``.
STEP_MEAN_KEYS = ("loss", "lr")


def sums_to_means(sums: Mapping[str, Any], *, steps: int = 1, examples: float | None = None) -> dict[str, float]:
    """Host-side means of metric sums accumulated over ``steps`` steps (or eval batches).

    Rates are divided by ``count``; the per-example loss terms by ``examples`` (the global
    batch times the steps when training, as the reference logs them; ``count`` at evaluation),
    or left as per-step means when ``examples`` is None; ``loss`` and ``lr`` are per-step means.
    Anything else (``count``) stays a sum. Fetches device arrays first.
    """
    values = {key: float(value) for key, value in jax.device_get(dict(sums)).items()}
    count = max(values.get("count", 0.0), 1.0)
    out: dict[str, float] = {}
    for key, value in values.items():
        if key in RATE_KEYS:
            out[key] = value / count
        elif key in EXAMPLE_LOSS_KEYS:
            out[key] = value / examples if examples else value / steps
        elif key in STEP_MEAN_KEYS:
            out[key] = value / steps
        else:
            out[key] = value
    return out


def _first_bad(
    loss: jax.Array, step: jax.Array, bad_step: jax.Array, bad_loss: jax.Array
) -> tuple[jax.Array, jax.Array]:
    new = (bad_step == 0) & ~jnp.isfinite(loss)
    return jnp.where(new, step, bad_step), jnp.where(new, loss, bad_loss)


@jax.jit
def _start(metrics: dict, step: jax.Array) -> dict:
    bad_step, bad_loss = _first_bad(metrics["loss"], step, jnp.zeros((), jnp.int32), jnp.zeros_like(metrics["loss"]))
    return {"sums": metrics, "bad_step": bad_step, "bad_loss": bad_loss}


@jax.jit
def _add(window: dict, metrics: dict, step: jax.Array) -> dict:
    bad_step, bad_loss = _first_bad(metrics["loss"], step, window["bad_step"], window["bad_loss"])
    sums = jax.tree_util.tree_map(jnp.add, window["sums"], metrics)
    return {"sums": sums, "bad_step": bad_step, "bad_loss": bad_loss}


class MetricWindow:
    """Training metric sums since the last read, accumulated on device.

    :meth:`add` dispatches one small jitted add and never waits for the device, so the host
    stays ahead of the steps; :meth:`read` (at log, evaluation and stop steps) fetches the sums
    once, with the first step whose loss was not finite.
    """

    def __init__(self, global_batch: int) -> None:
        self.global_batch = global_batch
        self.reset()

    def reset(self) -> None:
        """Empties the window (after a log line) and restarts its clock."""
        self._acc: dict | None = None
        self.steps = 0
        self.first_step: int | None = None
        self.last_step: int | None = None
        self._start = time.perf_counter()

    def add(self, metrics: dict, step: int) -> None:
        """Adds the metrics of ``step`` (device arrays) to the window."""
        self._acc = _start(metrics, step) if self._acc is None else _add(self._acc, metrics, step)
        self.steps += 1
        self.first_step = step if self.first_step is None else self.first_step
        self.last_step = step

    def read(self) -> tuple[dict[str, float], tuple[int, float] | None]:
        """``(means, nonfinite)``: the window's means (with ``steps_per_s``) and, when a loss was
        not finite, ``(step, loss)`` of the first such step. Does not reset the window."""
        if self._acc is None:
            return {}, None
        acc = jax.device_get(self._acc)
        means = sums_to_means(acc["sums"], steps=self.steps, examples=self.steps * self.global_batch)
        means.pop("count", None)
        elapsed = time.perf_counter() - self._start
        means["steps_per_s"] = self.steps / elapsed if elapsed > 0 else 0.0
        bad = int(acc["bad_step"])
        return means, ((bad, float(acc["bad_loss"])) if bad else None)
