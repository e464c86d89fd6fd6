"""Small configs and batches shared by the model and engine tests."""

from __future__ import annotations

import gc
import os
import signal

import jax
import ml_collections
import numpy as np

from trm_jax import configs as configs_lib
from trm_jax.config import TRMConfig
from trm_jax.train.state import OptimConfig


def tiny_model_config(**overrides) -> TRMConfig:
    values = dict(
        seq_len=16,
        vocab_size=12,
        num_puzzle_identifiers=7,
        puzzle_emb_ndim=32,
        puzzle_emb_len=2,
        hidden_size=32,
        num_heads=2,
        expansion=2.0,
        H_cycles=2,
        L_cycles=2,
        halt_max_steps=3,
        halt_exploration_prob=0.3,
        forward_dtype="float32",
    )
    values.update(overrides)
    return TRMConfig(**values)


def tiny_optim_config(**overrides) -> OptimConfig:
    values = dict(
        global_batch_size=8,
        total_steps=50,
        lr=1e-3,
        lr_warmup_steps=2,
        puzzle_emb_lr=1e-2,
        weight_decay=0.1,
        puzzle_emb_weight_decay=0.1,
    )
    values.update(overrides)
    return OptimConfig(**values)


def random_batch(config: TRMConfig, batch_size: int, seed: int) -> dict[str, np.ndarray]:
    """A batch whose labels are a fixed function of the inputs (so it is learnable)."""
    rng = np.random.default_rng(seed)
    inputs = rng.integers(1, config.vocab_size, (batch_size, config.seq_len)).astype(np.int32)
    labels = ((inputs * 3 + 1) % config.vocab_size).astype(np.int32)
    labels[:, -2:] = -100  # some ignored cells
    ids = rng.integers(0, config.num_puzzle_identifiers, (batch_size,)).astype(np.int32)
    return {"inputs": inputs, "labels": labels, "puzzle_identifiers": ids}


def tiny_run_config(dataset: str | os.PathLike, **overrides) -> ml_collections.ConfigDict:
    """A trainer config (the quickstart's, shrunk): batch 4, 12 steps, evaluation every 6."""
    values = {
        "model.hidden_size": 16,
        "model.num_heads": 2,
        "model.expansion": 1.0,
        "model.H_cycles": 1,
        "model.L_cycles": 1,
        "model.L_layers": 1,
        "model.halt_max_steps": 2,
        "model.puzzle_emb_ndim": 16,
        "model.puzzle_emb_len": 1,
        "optim.global_batch_size": 4,
        "optim.total_steps": 12,
        "optim.lr_warmup_steps": 2,
        "optim.lr": 1e-3,
        "train.eval_every_steps": 6,
        "train.log_every": 3,
        "train.eval_batch_size": 4,
        "train.progress_bar": False,
        "data.dataset_dir": str(dataset),
        "data.generate.kind": "",
        "train.tensorboard": False,
        "train.depth_curve_steps": 0,
        # Generation in this process: worker processes would re-run an unguarded script (the
        # multi-host worker) as their __main__.
        "data.generate.workers": 1,
    }
    values.update(overrides)
    return configs_lib.apply_overrides(configs_lib.load_config("quickstart"), values)


def reference_dir() -> str | None:
    """The checkout of the official TRM repository named by ``TRM_REFERENCE_DIR``, if any."""
    from benchmarks.common import REFERENCE_ENV  # noqa: PLC0415 - importable through tests/conftest.py

    return os.environ.get(REFERENCE_ENV) or None


def needs_reference(purpose: str):
    """Skips a test unless ``TRM_REFERENCE_DIR`` names a checkout of the official code."""
    import pytest  # noqa: PLC0415 - this module is also imported by plain worker scripts

    from benchmarks.common import REFERENCE_ENV  # noqa: PLC0415

    return pytest.mark.skipif(
        not reference_dir(), reason=f"set {REFERENCE_ENV} to a checkout of the official TRM repository to {purpose}"
    )


def numpy_leaves(tree) -> dict[str, np.ndarray]:
    """A train state's leaves as numpy arrays by path (PRNG keys as their key data)."""
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out[jax.tree_util.keystr(path)] = np.asarray(leaf)
    return out


def pallas_hlo_interpret():
    """A context in which Pallas kernels traced for TPU run through Pallas' HLO interpreter on
    the CPU (``interpret=True`` for every ``pallas_call``).

    ``jax.experimental.pallas.tpu.force_tpu_interpret_mode`` simulates a TPU more closely but
    runs kernels through host callbacks, which ``jax.checkpoint`` (the differentiated cycle's
    saved-activation policies) cannot partially evaluate; the HLO interpreter is pure JAX.
    The switch is JAX's own (the config that ``force_tpu_interpret_mode`` sets), set to True.
    """
    import contextlib  # noqa: PLC0415

    from jax._src import config as jax_config  # noqa: PLC0415 - no public spelling of interpret=True

    @contextlib.contextmanager
    def context():
        setting = jax_config.pallas_tpu_interpret_mode_context_manager
        previous = setting.swap_local(True)
        try:
            yield
        finally:
            setting.set_local(previous)

    return context()


def sigterm_in_gc_callback() -> None:
    """Raise SIGTERM inside a garbage-collector callback, once, during one ``gc.collect()``.

    The signal's handler runs there, where Python swallows an exception it raises (reports it
    through ``sys.unraisablehook``, "Exception ignored ...") and goes on: what jax's
    ``_xla_gc_callback`` once did to a SIGTERM that arrived during a compile.
    """
    sent: list[bool] = []

    def term_once(phase: str, info: dict) -> None:
        if phase == "start" and not sent:
            sent.append(True)
            signal.raise_signal(signal.SIGTERM)  # runs the handler here, inside the callback

    gc.callbacks.append(term_once)
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(term_once)
