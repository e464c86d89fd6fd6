"""The jitted (or pmapped) train and eval steps of a run, behind one interface."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from trm_jax.config import TRMConfig
from trm_jax.train import parallel
from trm_jax.train.state import OptimConfig, TrainState


class Stepper:
    """The train step of a run and conversions to/from the canonical state layout.

    ``mode="jit"``: the step jitted over the mesh (the main path). ``mode="pmap"``: the same
    step under ``jax.pmap``, the state kept in pmap's layout while training (:meth:`to_running`);
    evaluation (:func:`~trm_jax.train.evaluation.make_eval_fn`) and checkpoints always see the
    canonical (jit-sharded) state, so both modes share one evaluation.
    """

    def __init__(
        self,
        mode: str,
        model_config: TRMConfig,
        optim_config: OptimConfig,
        mesh: jax.sharding.Mesh,
        state: TrainState,
        compiled: Any = None,
    ):
        """``compiled``: the jitted train step already compiled for this state and its
        batches (by the start-up memory check); used as is in ``"jit"`` mode."""
        if mode not in ("jit", "pmap"):
            raise ValueError(f"config.train.parallel={mode!r}: expected 'jit' or 'pmap'")
        self.mode, self.mesh = mode, mesh
        self._shardings = parallel.state_shardings(state, mesh)
        if mode == "jit":
            self._train = compiled or parallel.jit_train_step(model_config, optim_config, mesh, state)
        else:
            self._devices = jax.local_device_count()
            self._train = parallel.pmap_train_step(model_config, optim_config)

    def to_running(self, state: TrainState) -> TrainState:
        """The canonical state in the layout :meth:`train` takes."""
        return state if self.mode == "jit" else parallel.replicate_for_pmap(state)

    def to_canonical(self, state: TrainState) -> TrainState:
        """A running state back in the canonical, mesh-sharded layout."""
        if self.mode == "jit":
            return state
        return jax.device_put(parallel.unreplicate_from_pmap(state), self._shardings)

    def train(self, state: TrainState, batch: dict[str, np.ndarray]) -> tuple[TrainState, dict]:
        """One step on this process's host batch; metrics stay on device."""
        if self.mode == "jit":
            return self._train(state, parallel.shard_batch(batch, self.mesh))
        state, metrics = self._train(state, parallel.split_batch_for_pmap(batch, self._devices))
        return state, jax.tree_util.tree_map(lambda x: x[0], metrics)
