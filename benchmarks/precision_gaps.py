"""How far our float32 lr schedule and float32 stablemax are from the reference's float64.

The reference evaluates its lr schedule in Python floats (float64) and its stablemax
cross-entropy in float64; trm-jax without ``jax_enable_x64`` does both in float32. This
prints the measured gaps (the figures quoted in trm_jax/train/optim.py and trm_jax/losses.py).
Needs no reference checkout: the reference formulas are restated in
``benchmarks.reference_torch.warmup_cosine_lr`` and below in numpy float64.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.reference_torch import warmup_cosine_lr
from trm_jax.losses import stablemax_cross_entropy
from trm_jax.train.optim import warmup_cosine_schedule

SCHEDULES = [(1e-4, 2000, 100_000, 1.0), (1e-4, 2000, 100_000, 0.1), (1e-2, 2000, 100_000, 0.1)]


def schedule_gaps() -> None:
    for base, warm, total, min_ratio in SCHEDULES:
        counts = np.arange(total)
        ours = np.asarray(jax.jit(jax.vmap(warmup_cosine_schedule(base, warm, total, min_ratio)))(counts))
        ref64 = np.array([warmup_cosine_lr(int(c) + 1, base, warm, total, min_ratio) for c in counts])
        ref32 = ref64.astype(np.float32)
        ulps = np.abs(ours.view(np.int32).astype(np.int64) - ref32.view(np.int32).astype(np.int64))
        rel = np.abs(ours.astype(np.float64) - ref64) / ref64
        line = (f"lr={base:g} warmup={warm} total={total} min_ratio={min_ratio}: lr differs from "
                f"float64 rounded at {np.mean(ulps > 0):.1%} of steps, max {ulps.max()} ulp, "
                f"max rel {rel.max():.2e}")
        for wd in (0.1, 1.0):
            d_ours = np.float32(1) - ours * np.float32(wd)
            d_ref = (1.0 - ref64 * wd).astype(np.float32)
            line += f"; 1-lr*wd (wd={wd}) differs at {np.mean(d_ours != d_ref):.2%}"
        print(line)


def stablemax_gaps(seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for scale in (1.0, 10.0):
        for dtype in (jnp.float32, jnp.bfloat16):
            logits = jnp.asarray(rng.standard_normal((64, 81, 11)) * scale, dtype)
            labels = rng.integers(0, 11, (64, 81))
            ours = np.asarray(stablemax_cross_entropy(logits, jnp.asarray(labels),
                                                      jnp.ones((64, 81), bool)), np.float64)
            x = np.asarray(logits.astype(jnp.float32), np.float64)
            s = np.where(x < 0, 1 / (1 - x + 1e-30), x + 1)
            ref = -np.log(np.take_along_axis(s / s.sum(-1, keepdims=True), labels[..., None],
                                             -1)[..., 0])
            rel = np.abs(ours - ref) / ref
            print(f"stablemax {np.dtype(dtype).name} logits x{scale:g}: per-token rel err max "
                  f"{rel.max():.2e}, mean {rel.mean():.2e}; summed loss rel err "
                  f"{abs(ours.sum() - ref.sum()) / ref.sum():.2e}")


if __name__ == "__main__":
    schedule_gaps()
    stablemax_gaps()
