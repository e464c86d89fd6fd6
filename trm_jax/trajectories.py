"""Stochastic test-time scaling: several noisy trajectories per puzzle, and one answer chosen.

Probabilistic TRM (Sghaier, Parviz and Jolicoeur-Martineau, arXiv 2605.19943) runs K copies
of each puzzle, adds Gaussian noise to the recursion's state at every deep-recursion
(supervision) step so that the copies leave the basin a deterministic run stays in, and keeps
the copy whose halting head is most confident. No retraining: the trained model is used as is.

This module holds what is specific to that: :class:`TrajectorySampling` (K, the noise scale,
the selection rule), the noise itself (:func:`trajectory_noise`, keyed by puzzle, trajectory
and step so that it does not depend on which slot or device runs a trajectory) and the
selection (:func:`select_trajectories`). :func:`trm_jax.inference.solve` runs the trajectories
as slots of its continuous batching.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

Array = jax.Array

SELECTION_RULES = ("qhalt", "vote")
NOISE_TARGETS = ("z_L", "z_H", "both")
# Folded into the key first, so that z_H and z_L never share draws.
NOISE_SALT = {"z_H": 0, "z_L": 1}


@dataclasses.dataclass(frozen=True)
class TrajectorySampling:
    """How many trajectories a puzzle gets at inference and how one is chosen.

    ``trajectories``: K >= 1 runs per puzzle. ``noise``: sigma >= 0, the standard deviation of
    the Gaussian noise added to the state at the start of every supervision step (0: none; K
    trajectories without noise are K copies of one run). ``noise_on``: which state takes it:
    ``"z_L"`` (the latent z, the default), ``"z_H"`` (the answer y) or ``"both"``.
    ``select``: the answer reported: ``"qhalt"``, the trajectory whose halting logit at its
    last step is highest (the paper's rule; ties go to the lowest trajectory index), or
    ``"vote"``, the answer most trajectories reached (ties go to the answer whose best
    trajectory has the highest halting logit). Both rules' results are always computed.
    K = 1 with sigma = 0 is the plain evaluation, bit for bit.
    """

    trajectories: int = 1
    noise: float = 0.0
    select: str = "qhalt"
    noise_on: str = "z_L"

    def __post_init__(self) -> None:
        if self.trajectories < 1:
            raise ValueError(f"trajectories={self.trajectories}: expected >= 1")
        if not self.noise >= 0.0:  # also refuses NaN
            raise ValueError(f"noise={self.noise}: expected a standard deviation >= 0")
        if self.select not in SELECTION_RULES:
            raise ValueError(f"select={self.select!r}: expected one of {SELECTION_RULES}")
        if self.noise_on not in NOISE_TARGETS:
            raise ValueError(f"noise_on={self.noise_on!r}: expected one of {NOISE_TARGETS}")

    @property
    def is_plain(self) -> bool:
        """One trajectory and no noise: the deterministic evaluation."""
        return self.trajectories == 1 and self.noise == 0.0


def trajectory_key(key: Array, puzzle: Array, trajectory: Array, step: Array) -> Array:
    """The PRNG key of (puzzle, trajectory, step): ``key`` folded with each index in turn, so
    a draw depends on what is computed, never on the slot or the device that computes it."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, puzzle), trajectory), step)


def trajectory_noise(
    key: Array, puzzle: Array, trajectory: Array, step: Array, shape: tuple[int, ...], dtype: jnp.dtype
) -> Array:
    """Standard normal draws of ``shape`` for one (puzzle, trajectory, step) (unscaled)."""
    return jax.random.normal(trajectory_key(key, puzzle, trajectory, step), shape, dtype)


def add_noise(
    sampling: TrajectorySampling,
    key: Array,
    z_H: Array,
    z_L: Array,
    puzzle: Array,
    trajectory: Array,
    step: Array,
    real: jnp.dtype,
) -> tuple[Array, Array]:
    """``(z_H, z_L)`` [B, L, D] with ``sampling.noise`` times standard normal draws added to the
    state(s) ``sampling.noise_on`` names, row b's drawn for (``puzzle[b]``, ``trajectory[b]``,
    ``step[b]``); the sum is taken in ``real`` (float32 or float64) and cast back."""

    def noisy(z: Array, target: str) -> Array:
        def row(p, t, s):
            return trajectory_noise(jax.random.fold_in(key, NOISE_SALT[target]), p, t, s, z.shape[1:], real)

        draws = jax.vmap(row)(puzzle, trajectory, step)
        return (z.astype(real) + sampling.noise * draws).astype(z.dtype)

    if sampling.noise_on in ("z_H", "both"):
        z_H = noisy(z_H, "z_H")
    if sampling.noise_on in ("z_L", "both"):
        z_L = noisy(z_L, "z_L")
    return z_H, z_L


def _take(values: Array, index: Array) -> Array:
    """``values`` [N, K, ...] at trajectory ``index`` [N] of each puzzle: [N, ...]."""
    return jnp.take_along_axis(values, index.reshape((-1, 1) + (1,) * (values.ndim - 2)), axis=1)[:, 0]


def select_trajectories(per_trajectory: dict[str, Array], select: str) -> dict[str, Array]:
    """One result per puzzle from per-trajectory results [N, K, ...].

    ``per_trajectory`` holds ``preds`` [N, K, S], ``q_halt_logits`` and ``steps`` [N, K], and
    optionally ``exact``, ``accuracy``, ``lm_loss``, ``num_labels`` [N, K]. Returns those keys
    [N] (``preds`` [N, S]) of the trajectory ``select`` chooses, and: ``agreement`` [N] (int32,
    how many of the K trajectories reached the chosen answer), ``trajectory_steps`` [N] (the
    steps of all K, the compute spent), ``trajectory_index`` [N]; with ``exact`` also
    ``exact_qhalt`` and ``exact_vote`` (each rule's answer exact) and ``oracle_exact`` (any
    trajectory exact: the best a selection rule could do).
    """
    if select not in SELECTION_RULES:
        raise ValueError(f"select={select!r}: expected one of {SELECTION_RULES}")
    preds, q_halt = per_trajectory["preds"], per_trajectory["q_halt_logits"]
    by_qhalt = jnp.argmax(q_halt, axis=1).astype(jnp.int32)
    same = jnp.all(preds[:, :, None, :] == preds[:, None, :, :], axis=-1)  # [N, K, K]
    votes = same.sum(axis=-1, dtype=jnp.int32)  # [N, K]: trajectories sharing each one's answer
    # Among the answers with the most votes, the trajectory with the highest halting logit.
    leaders = votes == votes.max(axis=1, keepdims=True)
    by_vote = jnp.argmax(jnp.where(leaders, q_halt, -jnp.inf), axis=1).astype(jnp.int32)
    chosen = by_qhalt if select == "qhalt" else by_vote
    out = {k: _take(v, chosen) for k, v in per_trajectory.items()}
    out["agreement"] = _take(votes, chosen)
    out["trajectory_steps"] = per_trajectory["steps"].sum(axis=1, dtype=jnp.int32)
    out["trajectory_index"] = chosen
    if "exact" in per_trajectory:
        exact = per_trajectory["exact"]
        out["exact_qhalt"] = _take(exact, by_qhalt)
        out["exact_vote"] = _take(exact, by_vote)
        out["oracle_exact"] = exact.any(axis=1)
    return out
