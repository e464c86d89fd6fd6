"""Test-time depth: exact accuracy after each supervision step, and where the halting head stops.

TRM's claim is that the same small network, applied again, solves what one pass does not. The
depth curve measures it on a trained model: every test puzzle runs ``max_steps`` evaluation
ACT steps from a fresh carry (past ``halt_max_steps`` too: rows keep refining instead of
being reset), and after each step we record, per puzzle, whether the whole answer is right
and the halting head's logit. From that one trace come

- the exact accuracy at a fixed test-time depth of 1, 2, 4, ... steps (the curve), and
- learned halting: each puzzle stops at the first step whose ``q_halt`` logit is > 0 (the
  rule training uses, ``no_ACT_continue``), or at ``halt_max_steps``; the mean number of steps
  this takes and the exact accuracy of the answers it stops at.

The trace holds two [steps, batch] arrays, never a stack of logits.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from trm_jax.config import TRMConfig
from trm_jax.data.loader import IGNORE_LABEL_ID
from trm_jax.losses import row_metrics
from trm_jax.model.act import Batch, act_step, initial_carry
from trm_jax.model.flash_attention import partitioned
from trm_jax.model.network import Variables

DEPTH_JSON = "depth_curve.json"
DEPTH_PLOT = "depth_curve.png"


def depth_trace(config: TRMConfig, variables: Variables, batch: Batch, max_steps: int) -> dict[str, jax.Array]:
    """Per row and step, ``exact`` (bool), ``accuracy`` (the row's token accuracy) and
    ``q_halt_logits``, all [B, max_steps].

    Column k is the state after k + 1 evaluation ACT steps, as
    :func:`~trm_jax.model.act.evaluate_to_halt` with ``num_steps=k + 1`` gives it. ``valid``
    [B] marks rows that are not padding (some label not ignored).
    """
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    run_config = config.replace(halt_max_steps=max(max_steps, config.halt_max_steps))

    def body(carry, _):
        carry, outputs = act_step(run_config, variables, carry, batch, training=False)
        rows = row_metrics(config, batch["labels"], outputs)
        return carry, (rows["exact"], rows["accuracy"], outputs["q_halt_logits"].astype(jnp.float32))

    _, (exact, accuracy, q_halt) = jax.lax.scan(body, initial_carry(config, batch), None, length=max_steps)
    return {
        "exact": exact.T,
        "accuracy": accuracy.T,
        "q_halt_logits": q_halt.T,
        "valid": jnp.any(batch["labels"] != IGNORE_LABEL_ID, axis=-1),
    }


def depth_points(max_steps: int, halt_max_steps: int) -> list[int]:
    """The depths reported: 1, 2, 4, ... up to ``max_steps``, plus ``halt_max_steps`` and ``max_steps``."""
    points = {1 << i for i in range(max_steps.bit_length()) if 1 << i <= max_steps}
    points |= {max_steps} | ({halt_max_steps} if halt_max_steps <= max_steps else set())
    return sorted(points)


@dataclasses.dataclass(frozen=True)
class DepthCurve:
    """Exact accuracy against test-time supervision steps, and the learned halting point."""

    steps: list[int]  # test-time supervision steps (depths)
    exact_accuracy: list[float]  # fraction of puzzles solved exactly at each depth
    halt_max_steps: int  # the depth the model was trained to (and halting is capped at)
    halting_mean_steps: float  # mean steps when each puzzle stops at its first q_halt > 0
    halting_exact_accuracy: float  # exact accuracy of the answers halting stops at
    halted_by_head: float  # fraction of puzzles whose head said halt before the cap
    num_puzzles: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """One line: the curve and the halting point, in percent."""
        curve = ", ".join(f"{s}: {100 * a:.1f}%" for s, a in zip(self.steps, self.exact_accuracy))
        return (
            f"exact accuracy by test-time supervision steps {{{curve}}}; learned halting: "
            f"{self.halting_mean_steps:.2f} steps on average, {100 * self.halting_exact_accuracy:.1f}% "
            f"exact ({self.num_puzzles} test puzzles)"
        )


def summarize_trace(exact: np.ndarray, q_halt_logits: np.ndarray, halt_max_steps: int) -> DepthCurve:
    """The :class:`DepthCurve` of host arrays ``exact`` / ``q_halt_logits`` [N, max_steps] (valid rows only)."""
    exact, q_halt_logits = exact.T, q_halt_logits.T
    max_steps, n = exact.shape
    if n == 0:
        raise ValueError("no test puzzles in the depth trace")
    steps = depth_points(max_steps, halt_max_steps)
    cap = min(halt_max_steps, max_steps)
    says_halt = q_halt_logits[:cap] > 0
    says_halt[cap - 1] = True  # the cap halts every row that is still running
    first = np.argmax(says_halt, axis=0)  # index of the first True
    return DepthCurve(
        steps=steps,
        exact_accuracy=[float(exact[s - 1].mean()) for s in steps],
        halt_max_steps=halt_max_steps,
        halting_mean_steps=float((first + 1).mean()),
        halting_exact_accuracy=float(exact[first, np.arange(n)].mean()),
        halted_by_head=float((q_halt_logits[:cap] > 0).any(axis=0).mean()),
        num_puzzles=int(n),
    )


def depth_curve(
    config: TRMConfig,
    variables: Variables,
    batches: Iterable[dict[str, np.ndarray]],
    max_steps: int,
    mesh: jax.sharding.Mesh | None = None,
) -> DepthCurve:
    """The depth curve over ``batches`` (e.g. a run's test loader), padding rows left out.

    With ``mesh`` each batch is sharded over its devices by rows (this process's rows, as the
    eval loader gives them); without, it runs on the default device.
    """
    from trm_jax.train import parallel  # noqa: PLC0415
    from trm_jax.train.evaluation import host_rows  # noqa: PLC0415

    trace = jax.jit(partitioned(lambda v, b: depth_trace(config, v, b, max_steps), mesh, parallel.DATA_AXIS))
    exact, q_halt = [], []
    for batch in batches:
        placed = parallel.shard_batch(batch, mesh) if mesh is not None else jax.device_put(batch)
        out = trace(variables, placed)
        keep = host_rows(out["valid"])
        exact.append(host_rows(out["exact"])[keep])
        q_halt.append(host_rows(out["q_halt_logits"])[keep])
    return summarize_trace(np.concatenate(exact), np.concatenate(q_halt), config.halt_max_steps)


def save_depth_curve(curve: DepthCurve, out_dir: str | os.PathLike, title: str = "") -> Path:
    """Writes ``out_dir/depth_curve.json`` and ``out_dir/depth_curve.png``; returns the PNG's path."""
    from trm_jax.fileio import write_json_atomic  # noqa: PLC0415

    out_dir = Path(out_dir)
    write_json_atomic(out_dir / DEPTH_JSON, curve.to_dict())
    return plot_depth_curve(curve, out_dir / DEPTH_PLOT, title=title)


def plot_depth_curve(curve: DepthCurve, out: str | os.PathLike, title: str = "") -> Path:
    """A PNG of exact accuracy against test-time supervision steps, with the halting point."""
    from matplotlib.figure import Figure  # noqa: PLC0415 - matplotlib only when plotting

    from trm_jax.data.render import save_png  # noqa: PLC0415

    fig = Figure(figsize=(5.6, 3.8))
    ax = fig.subplots()
    ax.plot(curve.steps, [100 * a for a in curve.exact_accuracy], "o-", label="fixed test-time depth")
    ax.plot(
        [curve.halting_mean_steps],
        [100 * curve.halting_exact_accuracy],
        "r*",
        ms=12,
        label=f"learned halting ({curve.halting_mean_steps:.2f} steps on average)",
    )
    ax.axvline(
        curve.halt_max_steps,
        color="gray",
        ls="--",
        lw=1,
        label=f"trained depth (halt_max_steps={curve.halt_max_steps})",
    )
    ax.set_xscale("log", base=2)
    ax.set_xticks(curve.steps, [str(s) for s in curve.steps])
    ax.set_xlabel("supervision steps at test time")
    ax.set_ylabel(f"test puzzles solved exactly (%, of {curve.num_puzzles})")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_png(fig, out)
