"""Inference that halts: fixed or adaptive depth per puzzle, with continuous batching.

At evaluation the official code runs every puzzle for all ``halt_max_steps`` supervision steps,
although the model learned a halting head. :func:`solve` lets the user choose:

- ``HaltingPolicy("fixed")``: every puzzle runs ``max_steps`` steps (default
  ``halt_max_steps``): the official evaluation, and what
  :func:`~trm_jax.model.act.evaluate_to_halt` computes.
- ``HaltingPolicy("adaptive", threshold=p)``: a puzzle stops at the first step where its halting
  head's probability ``sigmoid(q_halt)`` exceeds ``p`` (0.5: the rule training uses, ``q_halt >
  0``), or at ``max_steps``.

Continuous batching: :func:`solve` keeps ``num_slots`` rows on the device. When a row halts,
its answer is written to the puzzle's place in the output and the slot takes the next puzzle
at the next step (the same reset the training carry uses), so the slots stay full and
throughput grows with the fraction of early halts. The whole loop is one ``lax.while_loop``
on the device: no host round-trip per step. Results come back per puzzle in input order
(``preds``, ``q_halt_logits``, ``steps`` and per-puzzle metrics when labels are given), and
hold the halting step's values only: memory does not grow with the number of steps.

Rows do not interact in TRM, so a puzzle's answer does not depend on which slot or which
neighbours it had (up to float rounding of batched matrix products).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from trm_jax.config import TRMConfig
from trm_jax.data.loader import IGNORE_LABEL_ID
from trm_jax.losses import row_metrics
from trm_jax.model.act import Batch, advance, gather_puzzle_rows, initial_carry, reset_halted
from trm_jax.model.flash_attention import partitioned
from trm_jax.model.network import Variables, compute_dtype
from trm_jax.precision import at_least_float32

HALTING_MODES = ("fixed", "adaptive")


@dataclasses.dataclass(frozen=True)
class HaltingPolicy:
    """How many supervision steps a puzzle gets at inference.

    ``mode``: ``"fixed"`` (every puzzle runs ``max_steps``) or ``"adaptive"`` (a puzzle stops when
    ``sigmoid(q_halt) > threshold``, at ``max_steps`` at the latest). ``max_steps`` 0 means the
    model's ``halt_max_steps``; more than that lets puzzles refine further. ``threshold`` in
    (0, 1]; 1 never fires (adaptive then equals fixed).
    """

    mode: str = "fixed"
    max_steps: int = 0
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.mode not in HALTING_MODES:
            raise ValueError(f"halting mode {self.mode!r}: expected one of {HALTING_MODES}")
        if self.max_steps < 0:
            raise ValueError(f"halting max_steps={self.max_steps}: expected >= 0 (0: halt_max_steps)")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"halting threshold={self.threshold}: expected a probability in (0, 1]")

    def cap(self, config: TRMConfig) -> int:
        """The most steps a puzzle runs."""
        return self.max_steps or config.halt_max_steps

    def logit_threshold(self) -> float:
        """The q_halt logit above which a row halts (``inf``: never)."""
        if self.mode == "fixed" or self.threshold >= 1.0:
            return math.inf
        return math.log(self.threshold) - math.log1p(-self.threshold)


def solve(config: TRMConfig, variables: Variables, puzzles: Batch, *, num_slots: int,
          policy: HaltingPolicy = HaltingPolicy(),
          slot_sharding: jax.sharding.Sharding | None = None) -> dict[str, jax.Array]:
    """Every puzzle of ``puzzles`` (``inputs`` [N, S], ``puzzle_identifiers`` [N], optional
    ``labels`` [N, S]) run to its halting step in ``num_slots`` rows with continuous batching.

    Returns, per puzzle in input order: ``preds`` [N, S] (int32), ``q_halt_logits`` [N] and
    ``steps`` [N] (int32, supervision steps used) of its halting step; with ``labels`` also
    ``exact`` [N] (bool), ``accuracy`` [N] and ``lm_loss`` [N] there (see
    :func:`~trm_jax.losses.row_metrics`), and ``num_labels`` [N]. Pure and jittable (``num_slots``
    and ``policy`` static). ``slot_sharding`` (e.g. ``NamedSharding(mesh, P("data"))``, applied to
    the leading axis) spreads the slots over devices: each computes its rows, the puzzles and
    results stay replicated.
    """
    n, seq = puzzles["inputs"].shape
    if n == 0:
        raise ValueError("solve: no puzzles")
    if num_slots < 1:
        raise ValueError(f"solve: num_slots={num_slots}: expected >= 1")
    cap = policy.cap(config)
    run_config = config.replace(halt_max_steps=cap)  # eval-mode advance halts rows at the cap
    limit = policy.logit_threshold()
    has_labels = "labels" in puzzles
    data = dict(puzzles)
    if not has_labels:
        data["labels"] = jnp.full((n, seq), IGNORE_LABEL_ID, jnp.int32)
    slot_template = {k: jnp.zeros((num_slots,) + v.shape[1:], v.dtype) for k, v in data.items()}
    buffers, params = variables["buffers"], variables["params"]
    real = at_least_float32(compute_dtype(config))  # float32, or float64 for a float64 model

    results = {"preds": jnp.zeros((n, seq), jnp.int32), "q_halt_logits": jnp.zeros((n,), real),
               "steps": jnp.zeros((n,), jnp.int32)}
    if has_labels:
        results.update(exact=jnp.zeros((n,), jnp.bool_), accuracy=jnp.zeros((n,), real),
                       lm_loss=jnp.zeros((n,), real), num_labels=jnp.zeros((n,), jnp.int32))

    def place(carry):
        if slot_sharding is None:
            return carry
        return jax.tree_util.tree_map(lambda x: jax.lax.with_sharding_constraint(x, slot_sharding), carry)

    def body(state):
        carry, slot_puzzle, next_puzzle, done, results = state
        # Halted (or empty) slots take the next puzzles, in slot order.
        free = carry.halted
        candidate = next_puzzle + jnp.cumsum(free.astype(jnp.int32)) - 1
        slot_puzzle = jnp.where(free, jnp.where(candidate < n, candidate, -1), slot_puzzle)
        next_puzzle = jnp.minimum(next_puzzle + free.sum(dtype=jnp.int32), n)
        rows = {k: jnp.take(v, jnp.clip(slot_puzzle, 0, n - 1), axis=0) for k, v in data.items()}
        carry = place(reset_halted(config, buffers, carry, rows))
        puzzle_rows = gather_puzzle_rows(config, buffers, carry.current_data["puzzle_identifiers"])
        carry, outputs = advance(run_config, params, carry, puzzle_rows, None, training=False)

        q_halt = outputs["q_halt_logits"].astype(real)
        active = slot_puzzle >= 0
        halted = carry.halted | (q_halt > limit)
        finished = halted & active
        where = jnp.where(finished, slot_puzzle, n)  # index n: dropped by the scatters
        metrics = row_metrics(config, carry.current_data["labels"], outputs)
        values = {"preds": metrics["preds"].astype(jnp.int32), "q_halt_logits": q_halt, "steps": carry.steps}
        if has_labels:
            values.update(exact=metrics["exact"], accuracy=metrics["accuracy"].astype(real),
                          lm_loss=metrics["lm_loss"].astype(real),
                          num_labels=metrics["num_labels"].astype(jnp.int32))
        results = {k: results[k].at[where].set(values[k], mode="drop") for k in results}
        carry = carry.replace(halted=halted | ~active)
        return carry, slot_puzzle, next_puzzle, done + finished.sum(dtype=jnp.int32), results

    state = (place(initial_carry(config, slot_template)), jnp.full((num_slots,), -1, jnp.int32),
             jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), results)
    *_, results = jax.lax.while_loop(lambda s: s[3] < n, body, state)
    return results


def summarize(results: dict[str, Any], cap: int) -> dict[str, float]:
    """Means over the labelled puzzles of :func:`solve`'s host results: ``count``, ``accuracy``,
    ``exact_accuracy``, ``lm_loss``, ``q_halt_accuracy``, ``steps`` (the eval-step names), and
    ``halted_early`` (fraction that stopped before ``cap``)."""
    valid = np.asarray(results["num_labels"]) > 0
    count = int(valid.sum())
    if count == 0:
        raise ValueError("no labelled puzzles to summarize")

    def mean(x):
        return float(np.asarray(x, np.float64)[valid].mean())

    exact = np.asarray(results["exact"])
    return {"count": float(count), "accuracy": mean(results["accuracy"]), "exact_accuracy": mean(exact),
            "lm_loss": mean(results["lm_loss"]),
            "q_halt_accuracy": mean((np.asarray(results["q_halt_logits"]) >= 0) == exact),
            "steps": mean(results["steps"]), "halted_early": mean(np.asarray(results["steps"]) < cap)}


def make_solver(config: TRMConfig, *, num_slots: int, policy: HaltingPolicy = HaltingPolicy(),
                mesh: jax.sharding.Mesh | None = None):
    """:func:`solve` jitted: ``(variables, puzzles) -> results``; with ``mesh`` the slots are
    sharded over its devices by rows (``num_slots`` a multiple of its size) and the results
    come back replicated."""
    if mesh is None:
        return jax.jit(functools.partial(solve, config, num_slots=num_slots, policy=policy))
    from jax.sharding import NamedSharding, PartitionSpec  # noqa: PLC0415

    if num_slots % mesh.size:
        raise ValueError(f"num_slots={num_slots} is not a multiple of the {mesh.size} devices")
    replicated = NamedSharding(mesh, PartitionSpec())
    rows = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
    solver = partitioned(functools.partial(solve, config, num_slots=num_slots, policy=policy,
                                           slot_sharding=rows), mesh, mesh.axis_names[0])
    return jax.jit(solver,
                   in_shardings=(replicated, replicated), out_shardings=replicated)
