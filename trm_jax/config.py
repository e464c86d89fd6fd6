"""The configuration types: :class:`TRMConfig` (model) and :class:`OptimConfig` (optimiser).

Frozen dataclasses, validated on construction. Every field of the official
``TinyRecursiveReasoningModel_ACTV1Config`` is in :class:`TRMConfig`, with the same name and
default, plus the loss options of its ``ACTLossHead``. These are the only places fields and
their defaults are declared: :func:`trm_jax.configs.base_config` derives the ``model`` and
``optim`` sections of the experiment configs from them, and :func:`TRMConfig.from_dict` /
:func:`OptimConfig.from_dict` turn those sections back.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

POS_ENCODINGS = ("rope", "learned", "none")
FORWARD_DTYPES = ("bfloat16", "float32", "float64")  # float64 needs jax_enable_x64
SAVED_ACTIVATIONS = ("matmuls", "wide_matmuls", "all")
LOSS_TYPES = ("stablemax_cross_entropy", "softmax_cross_entropy")
ATTENTION_IMPLS = ("auto", "xla", "cudnn", "pallas")


class ConfigError(ValueError):
    """A model configuration field has a value the model cannot use."""


@dataclasses.dataclass(frozen=True)
class TRMConfig:
    """Hyper-parameters of the TRM network, its recursion, ACT wrapper and loss head.

    Field names follow the official code. ``H_cycles`` is the paper's T (deep-recursion
    cycles), ``L_cycles`` its n (latent updates per cycle); ``z_H`` is the answer y and
    ``z_L`` the latent z.
    """

    seq_len: int
    vocab_size: int
    num_puzzle_identifiers: int = 1
    batch_size: int = 768  # informational: the reference sizes buffers with it
    puzzle_emb_ndim: int = 0
    H_cycles: int = 3
    L_cycles: int = 6
    H_layers: int = 0  # ignored by TRM, kept for config compatibility
    L_layers: int = 2
    hidden_size: int = 512
    expansion: float = 4.0
    num_heads: int = 8
    pos_encodings: str = "rope"
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    halt_max_steps: int = 16
    halt_exploration_prob: float = 0.1
    forward_dtype: str = "bfloat16"
    mlp_t: bool = False
    puzzle_emb_len: int = 16
    no_ACT_continue: bool = True
    loss_type: str = "stablemax_cross_entropy"
    remat: bool = False  # jax.checkpoint the differentiated cycle (memory for compute)
    # Without remat, what the differentiated cycle keeps for the backward pass: "matmuls"
    # (element-wise work recomputed), "wide_matmuls" (also the products contracting over
    # fewer than 128 elements recomputed: less memory, a little more compute) or "all"
    # (see model/recursion.py: deep_recursion).
    saved_activations: str = "matmuls"
    # "auto": a fused (flash) attention kernel in 16-bit precision, which keeps no [L, L]
    # scores: cuDNN's on a GPU, the Pallas kernel on a TPU; XLA's otherwise. Or one of them
    # by name: "xla", "cudnn" (GPU), "pallas" (TPU).
    attention_impl: str = "auto"

    def __post_init__(self) -> None:
        def need(cond: bool, field: str, expected: str) -> None:
            if not cond:
                raise ConfigError(f"TRMConfig.{field}={getattr(self, field)!r}: expected {expected}")

        for name in (
            "seq_len",
            "vocab_size",
            "num_puzzle_identifiers",
            "batch_size",
            "H_cycles",
            "L_cycles",
            "L_layers",
            "hidden_size",
            "num_heads",
            "halt_max_steps",
        ):
            need(isinstance(getattr(self, name), int) and getattr(self, name) >= 1, name, "a positive integer")
        need(self.puzzle_emb_ndim >= 0, "puzzle_emb_ndim", "an integer >= 0")
        need(self.puzzle_emb_len >= 0, "puzzle_emb_len", "an integer >= 0")
        need(self.expansion > 0, "expansion", "a positive number")
        need(self.pos_encodings in POS_ENCODINGS, "pos_encodings", f"one of {POS_ENCODINGS}")
        need(self.saved_activations in SAVED_ACTIVATIONS, "saved_activations", f"one of {SAVED_ACTIVATIONS}")
        need(self.forward_dtype in FORWARD_DTYPES, "forward_dtype", f"one of {FORWARD_DTYPES}")
        if self.forward_dtype == "float64":
            from trm_jax.precision import x64_enabled  # noqa: PLC0415 - keeps this module jax-free

            need(
                x64_enabled(),
                "forward_dtype",
                "'bfloat16' or 'float32' unless 64-bit JAX is on (JAX_ENABLE_X64=1, or "
                "jax.config.update('jax_enable_x64', True) before any array is created)",
            )
        need(self.loss_type in LOSS_TYPES, "loss_type", f"one of {LOSS_TYPES}")
        need(self.attention_impl in ATTENTION_IMPLS, "attention_impl", f"one of {ATTENTION_IMPLS}")
        need(0.0 <= self.halt_exploration_prob <= 1.0, "halt_exploration_prob", "a probability in [0, 1]")
        need(self.rms_norm_eps > 0, "rms_norm_eps", "a positive number")
        need(self.hidden_size % self.num_heads == 0, "hidden_size", f"a multiple of num_heads={self.num_heads}")
        if self.pos_encodings == "rope":
            need(
                (self.hidden_size // self.num_heads) % 2 == 0,
                "hidden_size",
                "hidden_size // num_heads even (RoPE rotates pairs of dimensions)",
            )
        if self.puzzle_emb_ndim > 0:
            need(
                self.puzzle_emb_ndim <= self.prefix_len * self.hidden_size,
                "puzzle_emb_ndim",
                f"at most puzzle_emb_len * hidden_size = {self.prefix_len * self.hidden_size}",
            )

    @property
    def prefix_len(self) -> int:
        """Number of puzzle-embedding positions prepended to the sequence.

        As in the reference: ``puzzle_emb_len`` when non-zero, else
        ``ceil(puzzle_emb_ndim / hidden_size)``. Unlike the reference, a model without
        puzzle embeddings (``puzzle_emb_ndim == 0``) but with ``puzzle_emb_len > 0`` still
        works: the prefix positions are filled with zeros (the reference crashes there).
        """
        if self.puzzle_emb_len > 0:
            return self.puzzle_emb_len
        return math.ceil(self.puzzle_emb_ndim / self.hidden_size)

    @property
    def total_len(self) -> int:
        """Sequence length inside the network: puzzle prefix + tokens."""
        return self.seq_len + self.prefix_len

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TRMConfig":
        """Builds a config from a mapping, rejecting unknown keys with their names."""
        values = dict(values)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown TRMConfig field(s): {', '.join(unknown)}; known fields: {', '.join(sorted(known))}"
            )
        return cls(**values)

    def replace(self, **changes: Any) -> "TRMConfig":
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Optimisation hyper-parameters (names follow the reference's cfg_pretrain.yaml)."""

    global_batch_size: int = 768
    total_steps: int = 100_000
    lr: float = 1e-4
    lr_min_ratio: float = 1.0
    lr_warmup_steps: int = 2000
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.1
    puzzle_emb_lr: float = 1e-2
    puzzle_emb_weight_decay: float = 0.1
    ema: bool = True
    ema_rate: float = 0.999
    # Gradient accumulation: each device's batch is run as this many chunks, one after the
    # other, their gradients summed before the one optimiser update (less activation memory;
    # on a CPU, chunks that fit its caches also run faster: benchmarks/README.md). The
    # experiment configs default to "auto" (trm_jax.configs.AUTO_MICROBATCHES), resolved to a
    # count here at a run's start-up.
    microbatches: int = 1

    def __post_init__(self) -> None:
        for name in ("global_batch_size", "total_steps", "microbatches"):
            if getattr(self, name) < 1:
                raise ConfigError(f"OptimConfig.{name}={getattr(self, name)!r}: expected >= 1")
        for name in (
            "lr",
            "puzzle_emb_lr",
            "weight_decay",
            "puzzle_emb_weight_decay",
            "lr_warmup_steps",
            "lr_min_ratio",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"OptimConfig.{name}={getattr(self, name)!r}: expected >= 0")
        if self.global_batch_size % self.microbatches:
            raise ConfigError(
                f"OptimConfig.microbatches={self.microbatches!r}: expected a "
                f"divisor of global_batch_size={self.global_batch_size}"
            )
        if not 0.0 <= self.ema_rate < 1.0:
            raise ConfigError(f"OptimConfig.ema_rate={self.ema_rate!r}: expected in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "OptimConfig":
        """Builds a config from a mapping, rejecting unknown keys with their names."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown OptimConfig field(s): {', '.join(unknown)}")
        return cls(**dict(values))

    def replace(self, **changes: Any) -> "OptimConfig":
        return dataclasses.replace(self, **changes)
