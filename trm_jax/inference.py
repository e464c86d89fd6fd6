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
from trm_jax.trajectories import TrajectorySampling, add_noise, select_trajectories

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


def solve(
    config: TRMConfig,
    variables: Variables,
    puzzles: Batch,
    *,
    num_slots: int,
    policy: HaltingPolicy = HaltingPolicy(),
    sampling: TrajectorySampling = TrajectorySampling(),
    key: jax.Array | None = None,
    slot_sharding: jax.sharding.Sharding | None = None,
) -> dict[str, jax.Array]:
    """Every puzzle of ``puzzles`` (``inputs`` [N, S], ``puzzle_identifiers`` [N], optional
    ``labels`` [N, S]) run to its halting step in ``num_slots`` rows with continuous batching.

    Returns, per puzzle in input order: ``preds`` [N, S] (int32), ``q_halt_logits`` [N] and
    ``steps`` [N] (int32, supervision steps used) of its halting step; with ``labels`` also
    ``exact`` [N] (bool), ``accuracy`` [N] and ``lm_loss`` [N] there (see
    :func:`~trm_jax.losses.row_metrics`), and ``num_labels`` [N]. Pure and jittable (``num_slots``,
    ``policy`` and ``sampling`` static). ``slot_sharding`` (e.g. ``NamedSharding(mesh, P("data"))``,
    applied to the leading axis) spreads the slots over devices: each computes its rows, the
    puzzles and results stay replicated.

    ``sampling`` with K > 1 trajectories or noise (:mod:`trm_jax.trajectories`): each puzzle runs
    K times, each run a slot of the continuous batching, with noise drawn from ``key`` per
    (puzzle, trajectory, step); the results are those of the trajectory ``sampling.select``
    chooses, with the keys :func:`~trm_jax.trajectories.select_trajectories` adds. The default
    (one trajectory, no noise) is the deterministic evaluation.
    """
    per_trajectory = run_trajectories(
        config,
        variables,
        puzzles,
        num_slots=num_slots,
        policy=policy,
        sampling=sampling,
        key=key,
        slot_sharding=slot_sharding,
    )
    if sampling.is_plain:
        return {k: v[:, 0] for k, v in per_trajectory.items()}
    return select_trajectories(per_trajectory, sampling.select)


def run_trajectories(
    config: TRMConfig,
    variables: Variables,
    puzzles: Batch,
    *,
    num_slots: int,
    policy: HaltingPolicy = HaltingPolicy(),
    sampling: TrajectorySampling = TrajectorySampling(),
    key: jax.Array | None = None,
    slot_sharding: jax.sharding.Sharding | None = None,
) -> dict[str, jax.Array]:
    """:func:`solve` before the selection: the results of every trajectory, [N, K, ...] (``preds``
    [N, K, S]), trajectory k of puzzle i at [i, k]. Trajectories are run in the order (puzzle,
    trajectory), as slots free up."""
    n, seq = puzzles["inputs"].shape
    if n == 0:
        raise ValueError("solve: no puzzles")
    if num_slots < 1:
        raise ValueError(f"solve: num_slots={num_slots}: expected >= 1")
    trajectories = sampling.trajectories
    noisy = sampling.noise > 0.0
    if noisy and key is None:
        raise ValueError(f"solve: noise={sampling.noise} needs a PRNG key")
    tasks = n * trajectories  # task t: trajectory t % K of puzzle t // K
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

    results = {
        "preds": jnp.zeros((tasks, seq), jnp.int32),
        "q_halt_logits": jnp.zeros((tasks,), real),
        "steps": jnp.zeros((tasks,), jnp.int32),
    }
    if has_labels:
        results.update(
            exact=jnp.zeros((tasks,), jnp.bool_),
            accuracy=jnp.zeros((tasks,), real),
            lm_loss=jnp.zeros((tasks,), real),
            num_labels=jnp.zeros((tasks,), jnp.int32),
        )

    def place(carry):
        if slot_sharding is None:
            return carry
        return jax.tree_util.tree_map(lambda x: jax.lax.with_sharding_constraint(x, slot_sharding), carry)

    def body(state):
        carry, slot_task, next_task, done, results = state
        # Halted (or empty) slots take the next tasks, in slot order.
        free = carry.halted
        candidate = next_task + jnp.cumsum(free.astype(jnp.int32)) - 1
        slot_task = jnp.where(free, jnp.where(candidate < tasks, candidate, -1), slot_task)
        next_task = jnp.minimum(next_task + free.sum(dtype=jnp.int32), tasks)
        slot_puzzle = jnp.clip(slot_task, 0, tasks - 1) // trajectories
        rows = {k: jnp.take(v, slot_puzzle, axis=0) for k, v in data.items()}
        carry = place(reset_halted(config, buffers, carry, rows))
        if noisy:
            z_H, z_L = add_noise(
                sampling, key, carry.z_H, carry.z_L, slot_puzzle, slot_task % trajectories, carry.steps, real
            )
            carry = place(carry.replace(z_H=z_H, z_L=z_L))
        puzzle_rows = gather_puzzle_rows(config, buffers, carry.current_data["puzzle_identifiers"])
        carry, outputs = advance(run_config, params, carry, puzzle_rows, None, training=False)

        q_halt = outputs["q_halt_logits"].astype(real)
        active = slot_task >= 0
        halted = carry.halted | (q_halt > limit)
        finished = halted & active
        where = jnp.where(finished, slot_task, tasks)  # index `tasks`: dropped by the scatters
        metrics = row_metrics(config, carry.current_data["labels"], outputs)
        values = {"preds": metrics["preds"].astype(jnp.int32), "q_halt_logits": q_halt, "steps": carry.steps}
        if has_labels:
            values.update(
                exact=metrics["exact"],
                accuracy=metrics["accuracy"].astype(real),
                lm_loss=metrics["lm_loss"].astype(real),
                num_labels=metrics["num_labels"].astype(jnp.int32),
            )
        results = {k: results[k].at[where].set(values[k], mode="drop") for k in results}
        carry = carry.replace(halted=halted | ~active)
        return carry, slot_task, next_task, done + finished.sum(dtype=jnp.int32), results

    state = (
        place(initial_carry(config, slot_template)),
        jnp.full((num_slots,), -1, jnp.int32),
        jnp.zeros((), jnp.int32),
        jnp.zeros((), jnp.int32),
        results,
    )
    *_, results = jax.lax.while_loop(lambda s: s[3] < tasks, body, state)
    return {k: v.reshape((n, trajectories) + v.shape[1:]) for k, v in results.items()}


def summarize(results: dict[str, Any], cap: int) -> dict[str, float]:
    """Means over the labelled puzzles of :func:`solve`'s host results: ``count``, ``accuracy``,
    ``exact_accuracy``, ``lm_loss``, ``q_halt_accuracy``, ``steps`` (the eval-step names), and
    ``halted_early`` (fraction that stopped before ``cap``); with several trajectories also
    ``exact_qhalt``, ``exact_vote``, ``oracle_exact`` (each rule's exact accuracy and that of
    the best trajectory), ``agreement`` (trajectories that reached the chosen answer) and
    ``trajectory_steps`` (supervision steps of all trajectories of a puzzle)."""
    valid = np.asarray(results["num_labels"]) > 0
    count = int(valid.sum())
    if count == 0:
        raise ValueError("no labelled puzzles to summarize")

    def mean(x):
        return float(np.asarray(x, np.float64)[valid].mean())

    exact = np.asarray(results["exact"])
    summary = {
        "count": float(count),
        "accuracy": mean(results["accuracy"]),
        "exact_accuracy": mean(exact),
        "lm_loss": mean(results["lm_loss"]),
        "q_halt_accuracy": mean((np.asarray(results["q_halt_logits"]) >= 0) == exact),
        "steps": mean(results["steps"]),
        "halted_early": mean(np.asarray(results["steps"]) < cap),
    }
    for key in ("exact_qhalt", "exact_vote", "oracle_exact", "agreement", "trajectory_steps"):
        if key in results:
            summary[key] = mean(results[key])
    return summary


def make_solver(
    config: TRMConfig,
    *,
    num_slots: int,
    policy: HaltingPolicy = HaltingPolicy(),
    sampling: TrajectorySampling = TrajectorySampling(),
    mesh: jax.sharding.Mesh | None = None,
):
    """:func:`solve` jitted: ``(variables, puzzles) -> results``, or ``(variables, puzzles, key)``
    when ``sampling`` adds noise; with ``mesh`` the slots are sharded over its devices by rows
    (``num_slots`` a multiple of its size) and the results come back replicated."""
    noisy = sampling.noise > 0.0
    options = dict(num_slots=num_slots, policy=policy, sampling=sampling)
    if mesh is None:
        solver = functools.partial(solve, config, **options)
        shardings = {}
    else:
        from jax.sharding import NamedSharding, PartitionSpec  # noqa: PLC0415

        if num_slots % mesh.size:
            raise ValueError(f"num_slots={num_slots} is not a multiple of the {mesh.size} devices")
        replicated = NamedSharding(mesh, PartitionSpec())
        rows = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
        solver = partitioned(functools.partial(solve, config, slot_sharding=rows, **options), mesh, mesh.axis_names[0])
        shardings = dict(in_shardings=(replicated,) * (3 if noisy else 2), out_shardings=replicated)
    if noisy:
        return jax.jit(lambda variables, puzzles, key: solver(variables, puzzles, key=key), **shardings)
    return jax.jit(lambda variables, puzzles: solver(variables, puzzles), **shardings)
