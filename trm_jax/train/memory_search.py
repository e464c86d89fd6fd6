"""What fits a device's memory: the fewest microbatches, remat, the largest batch per device.

Each search compiles candidate train steps through a ``plan(model_config, optim_config)``
callable (:func:`trm_jax.train.step_memory.train_step_memory` on a target, or the local devices at
the start of a run) and compares their peak with a budget in bytes. The step's math does not
change with any of these settings (microbatches sum the same gradients; remat recomputes
the same values), only its memory and time.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from trm_jax.config import OptimConfig, TRMConfig
from trm_jax.train.step_memory import StepMemory

PlanFn = Callable[[TRMConfig, OptimConfig], StepMemory]

# Compiles a search may spend on microbatch counts before giving up, and on row counts.
MAX_MICROBATCH_TRIALS = 6
MAX_ROW_TRIALS = 5


def divisors(n: int) -> list[int]:
    """The positive divisors of ``n``, ascending."""
    return [d for d in range(1, n + 1) if n % d == 0]


def fewest_microbatches(
    plan: PlanFn,
    model_config: TRMConfig,
    optim_config: OptimConfig,
    devices: int,
    budget: int | None,
    known: StepMemory | None = None,
) -> tuple[int, StepMemory] | None:
    """The smallest ``optim.microbatches`` (a divisor of the rows per device, from the
    configured count up) whose step fits ``budget``, with its plan; None when none of the
    first :data:`MAX_MICROBATCH_TRIALS` candidates does. ``known``: the plan of the configured
    count, if already compiled."""
    rows = optim_config.global_batch_size // devices
    candidates = [d for d in divisors(rows) if d >= optim_config.microbatches][:MAX_MICROBATCH_TRIALS]
    for count in candidates:
        memory = (
            known
            if (known is not None and count == optim_config.microbatches)
            else plan(model_config, dataclasses.replace(optim_config, microbatches=count))
        )
        if memory.fits(budget):
            return count, memory
    return None


def remat_memory(plan: PlanFn, model_config: TRMConfig, optim_config: OptimConfig) -> StepMemory:
    """The plan with ``model.remat=true`` (the differentiated cycle keeps nothing)."""
    return plan(model_config.replace(remat=True), optim_config)


def largest_rows_per_device(
    plan: PlanFn,
    model_config: TRMConfig,
    optim_config: OptimConfig,
    devices: int,
    budget: int,
    known: StepMemory | None = None,
    max_compiles: int = MAX_ROW_TRIALS,
) -> tuple[int, StepMemory] | None:
    """The largest rows per device (a multiple of ``optim.microbatches``) found to fit
    ``budget``, with its plan; None when no count tried fits.

    A search over compiled plans: the configured rows, then half or twice as many, then
    guesses from the line through the two nearest plans on either side of the budget, kept
    strictly between the largest count that fits and the smallest that does not (bisection
    when the line points outside: near its limit XLA rematerialises, so memory is not
    linear), until they are within 3% or ``max_compiles`` plans were made. The answer is a
    count that was compiled and fits, not an extrapolation.
    """
    chunk = optim_config.microbatches

    def at(rows: int) -> StepMemory:
        return plan(model_config, dataclasses.replace(optim_config, global_batch_size=rows * devices))

    rows = optim_config.global_batch_size // devices
    plans = {rows: known if known is not None else at(rows)}
    for _ in range(max_compiles):
        fitting = [r for r, m in plans.items() if m.fits(budget)]
        failing = [r for r, m in plans.items() if not m.fits(budget)]
        low, high = max(fitting, default=None), min(failing, default=None)
        if high is not None and high <= chunk:
            break
        if low is not None and high is not None and high - low <= max(chunk, low // 32):
            break
        guess = _next_rows(plans, low, high, budget, chunk)
        if guess is None or guess in plans:
            break
        plans[guess] = at(guess)
    fitting = [r for r, m in plans.items() if m.fits(budget)]
    if not fitting:
        return None
    best = max(fitting)
    return best, plans[best]


def _next_rows(plans: dict[int, StepMemory], low: int | None, high: int | None, budget: int, chunk: int) -> int | None:
    """The next row count to compile: the linear guess through the nearest plans, if it lies
    strictly between ``low`` (fits) and ``high`` (does not); else their midpoint, or double /
    half when one side is still unknown."""

    def down(x: float) -> int:
        return max(chunk, int(x) // chunk * chunk)

    if low is None:
        return down(high / 2) if high > chunk else None
    if high is None and len(plans) == 1:
        return down(low * 2)
    near = sorted(plans, key=lambda r: abs(r - (high if high is not None else low)))[:2]
    a, b = sorted(near)
    slope = (plans[b].peak_bytes - plans[a].peak_bytes) / (b - a) if b != a else 0
    guess = down(a + (budget - plans[a].peak_bytes) / slope) if slope > 0 else None
    upper = high if high is not None else 8 * low
    if guess is None or not low < guess < upper:
        guess = down((low + upper) / 2)
    return guess if low < guess < upper else None
