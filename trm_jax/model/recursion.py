"""The recursion over (z_H, z_L) as pure functions and ``jax.lax.scan``.

Paper names: z_H is the answer y, z_L the latent z, ``L_cycles`` is n and ``H_cycles`` is T.

* :func:`latent_recursion` - one cycle: n updates of z_L, then one of z_H.
* :func:`deep_recursion` - T-1 cycles through which no gradient flows (their inputs are
  stop-gradiented, so autodiff neither traces them nor keeps their activations), then one
  differentiated cycle; the carry is returned with ``stop_gradient``.

The traced program has the same size for every n and T: both loops are scans.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax

from trm_jax.config import SAVED_ACTIVATIONS

Array = jax.Array
NetFn = Callable[[Array, Array], Array]  # net(h, injection) -> h


def latent_recursion(net: NetFn, z_H: Array, z_L: Array, x: Array, n: int) -> tuple[Array, Array]:
    """n times ``z_L = net(z_L, z_H + x)``, then ``z_H = net(z_H, z_L)``."""
    injection = z_H + x

    def update_latent(z, _):
        return net(z, injection), None

    z_L, _ = jax.lax.scan(update_latent, z_L, None, length=n)
    return net(z_H, z_L), z_L


def deep_recursion(
    net: NetFn,
    z_H: Array,
    z_L: Array,
    x: Array,
    *,
    H_cycles: int,
    L_cycles: int,
    remat: bool = False,
    saved_activations: str = "matmuls",
    frozen_net: NetFn | None = None,
) -> tuple[Array, Array, Array]:
    """T-1 gradient-free cycles, then one differentiated cycle.

    Args:
      net: the shared network, closing over the parameters to differentiate.
      z_H, z_L: the carry [B, L, D].
      x: the input embedding [B, L, D].
      H_cycles, L_cycles: T and n.
      remat: wrap ``net`` in ``jax.checkpoint`` inside the differentiated cycle, trading
        recomputation for activation memory: nothing of it is kept for the backward pass.
      saved_activations: without ``remat``, what the backward pass of the differentiated
        cycle keeps: ``"matmuls"``, the outputs of the matrix products, with the element-wise
        work between them (norms, SiLU, gating, residual sums) recomputed in the backward
        pass; ``"wide_matmuls"``, only the outputs of products that contract over at least
        ``WIDE_DOT_MIN_CONTRACTION`` elements (the ones over the sequence, e.g. mlp_t's
        token mixing over 97 positions or attention's weighted values, and over a head's
        width, the attention scores, are recomputed too); or ``"all"``, every intermediate
        autodiff would keep. Same values each way; each keeps less than the next and,
        because the cycle is a scan whose saved values are stacked per iteration, writes
        less memory (measured in benchmarks/README.md).
      frozen_net: ``net`` with stop-gradiented parameters, for the gradient-free cycles.
        It must be given when ``net`` closes over parameters being differentiated;
        otherwise the gradient-free cycles would still be linearised.

    Returns:
      (z_H, new carry z_H, new carry z_L); the first keeps its gradient path for the
      heads, the carry is stop-gradiented.
    """
    frozen_net = frozen_net or net
    if H_cycles > 1:
        z_H0, z_L0, x0 = (jax.lax.stop_gradient(a) for a in (z_H, z_L, x))

        def free_cycle(carry, _):
            h, l = carry
            h, l = latent_recursion(frozen_net, h, l, x0, L_cycles)
            return (h, l), None

        (z_H, z_L), _ = jax.lax.scan(free_cycle, (z_H0, z_L0), None, length=H_cycles - 1)
        z_H, z_L = jax.lax.stop_gradient(z_H), jax.lax.stop_gradient(z_L)
    if saved_activations not in SAVED_ACTIVATIONS:
        raise ValueError(f"saved_activations={saved_activations!r}: expected one of {SAVED_ACTIVATIONS}")
    grad_net = _differentiated_net(net, remat, saved_activations)
    z_H, z_L = latent_recursion(grad_net, z_H, z_L, x, L_cycles)
    return z_H, jax.lax.stop_gradient(z_H), jax.lax.stop_gradient(z_L)


def _differentiated_net(net: NetFn, remat: bool, saved_activations: str) -> NetFn:
    """``net`` with what its backward pass keeps: nothing (``remat``), the matrix products'
    outputs (``"matmuls"``), those of the wide ones (``"wide_matmuls"``) or everything
    (``"all"``).

    ``prevent_cse=False``: by default ``jax.checkpoint`` hides the recomputed operations from
    XLA's common-subexpression elimination behind barriers, which also keep XLA from fusing
    them. Under a scan, which is where every call but the last answer update runs, there
    is nothing to merge them with (the forward values live in another loop), so the
    barriers only cost time: measured 1.11x the step time of the mlp_t Sudoku step on CPU
    (benchmarks/README.md). The gradients are the same.
    """
    if remat:
        return jax.checkpoint(net, prevent_cse=False)
    if saved_activations == "matmuls":
        return jax.checkpoint(net, policy=jax.checkpoint_policies.dots_saveable, prevent_cse=False)
    if saved_activations == "wide_matmuls":
        return jax.checkpoint(net, policy=saves_wide_dots, prevent_cse=False)
    return net


# A product contracting over K elements costs 2K FLOPs per output element: below this, its
# output is cheaper to recompute in the backward pass than to keep (stacked per iteration).
WIDE_DOT_MIN_CONTRACTION = 128


def saves_wide_dots(prim: Any, *avals: Any, **params: Any) -> bool:
    """A ``jax.checkpoint`` policy: keep the outputs of ``dot_general``s whose contraction is
    at least ``WIDE_DOT_MIN_CONTRACTION`` long; recompute everything else."""
    if prim is not jax.lax.dot_general_p:
        return False
    (lhs_contracting, _), _ = params["dimension_numbers"]
    return math.prod(avals[0].shape[d] for d in lhs_contracting) >= WIDE_DOT_MIN_CONTRACTION
