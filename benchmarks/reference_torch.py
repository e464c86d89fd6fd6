"""The official PyTorch TRM training step, built from a checkout of the official repository.

The reference code is *imported* from a directory given by the caller (``--reference-dir`` or
``$TRM_REFERENCE_DIR``); none of it lives in this project. Its ``pretrain.py`` cannot be
imported (it needs the CUDA-only ``adam_atan2`` package, wandb, hydra, ...), so the step is
assembled here the way ``pretrain.py`` assembles it:

* the ACT model (``models/recursive_reasoning/trm.py``) wrapped in ``ACTLossHead``,
  ``torch.compile``-d on GPU (as the reference runs unless ``DISABLE_COMPILE`` is set);
* ``CastedSparseEmbeddingSignSGD_Distributed`` (world size 1) over the puzzle-embedding buffers
  and AdamATan2 over the parameters: the CUDA ``adam_atan2.AdamATan2`` when importable, else
  :class:`AdamATan2Torch` below (same formula);
* per step: ``(loss / global_batch_size).backward()``, both learning rates set from the
  warm-up + cosine schedule at the incremented step counter, ``step()`` and ``zero_grad()``
  on each optimiser, then (``ema=True`` in the paper's commands) the reference ``EMAHelper``.
"""

from __future__ import annotations

import importlib
import math
import sys
import types
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from trm_jax.config import OptimConfig, TRMConfig


class AdamATan2Torch(torch.optim.Optimizer):
    """AdamATan2 in plain PyTorch, with the formula of the ``adam-atan2`` 0.0.3 CUDA kernel.

    Per step t (from 1), for every parameter p with gradient g::

        p *= 1 - lr * weight_decay
        m += (1 - b1) * (g - m);  v += (1 - b2) * (g^2 - v)
        p -= lr / (1 - b1^t) * atan2(m, sqrt(v) / sqrt(1 - b2^t))

    No epsilon, moments in float32 (the parameters are float32 in the reference).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 1e-2,
    ) -> None:
        if lr < 0:
            raise ValueError(f"AdamATan2Torch: lr={lr}, expected >= 0")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"AdamATan2Torch: betas={betas}, expected each in [0, 1)")
        if weight_decay < 0:
            raise ValueError(f"AdamATan2Torch: weight_decay={weight_decay}, expected >= 0")
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        if closure is not None:
            raise ValueError("AdamATan2Torch does not take a closure")
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            states = [self.state[p] for p in params]
            for p, state in zip(params, states):
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
            lr, (b1, b2), wd = group["lr"], group["betas"], group["weight_decay"]
            t = states[0]["step"]  # all parameters of a group step together
            exp_avgs = [s["exp_avg"] for s in states]
            exp_avg_sqs = [s["exp_avg_sq"] for s in states]

            torch._foreach_mul_(params, 1.0 - lr * wd)
            torch._foreach_lerp_(exp_avgs, grads, 1.0 - b1)
            torch._foreach_lerp_(exp_avg_sqs, torch._foreach_mul(grads, grads), 1.0 - b2)
            denoms = torch._foreach_sqrt(exp_avg_sqs)
            torch._foreach_div_(denoms, math.sqrt(1.0 - b2**t))
            updates = [torch.atan2(m, d) for m, d in zip(exp_avgs, denoms)]
            torch._foreach_add_(params, updates, alpha=-lr / (1.0 - b1**t))


def warmup_cosine_lr(
    step: int, base_lr: float, warmup_steps: int, total_steps: int, min_ratio: float, num_cycles: float = 0.5
) -> float:
    """The reference schedule: linear from 0 over ``warmup_steps``, then cosine to
    ``base_lr * min_ratio``; ``pretrain.py`` evaluates it at the step counter *after*
    incrementing it, so the first optimiser step uses ``step == 1``."""
    if step < warmup_steps:
        return base_lr * step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress))
    return base_lr * (min_ratio + max(0.0, (1.0 - min_ratio) * cosine))


def import_reference(reference_dir: str) -> types.SimpleNamespace:
    """Imports the reference's model, loss head, sparse embedding optimiser and EMA helper.

    The checkout's root goes on ``sys.path`` (its modules are a top-level ``models``
    package). Missing third-party modules are reported with the pip name to install.
    """
    if reference_dir not in sys.path:
        sys.path.insert(0, reference_dir)
    try:
        trm = importlib.import_module("models.recursive_reasoning.trm")
        losses = importlib.import_module("models.losses")
        sparse = importlib.import_module("models.sparse_embedding")
        ema = importlib.import_module("models.ema")
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            f"importing the reference from {reference_dir!r} needs module {err.name!r} "
            f"(pip install 'trm-jax[torch]' installs torch, einops and pydantic)"
        ) from err
    try:
        cuda_adam = importlib.import_module("adam_atan2").AdamATan2
    except Exception:  # CUDA-only wheel: absent or unbuildable on CPU machines
        cuda_adam = None
    return types.SimpleNamespace(
        model_cls=trm.TinyRecursiveReasoningModel_ACTV1,
        loss_head_cls=losses.ACTLossHead,
        signsgd_cls=sparse.CastedSparseEmbeddingSignSGD_Distributed,
        ema_helper_cls=ema.EMAHelper,
        cuda_adam_atan2=cuda_adam,
    )


def reference_model_dict(config: TRMConfig) -> dict[str, Any]:
    """The reference model's config dict from a ``TRMConfig`` (as ``create_model`` builds it)."""
    fields = config.to_dict()
    fields.pop("loss_type")
    fields.pop("remat")
    fields.pop("saved_activations")
    fields["causal"] = False
    return fields


class ReferenceTrainStep:
    """One official training step per call, on fixed weights, for timing and loss checks.

    ``state_dict`` holds the weights in the reference's naming (``inner.L_level...``,
    ``inner.H_init``, ``inner.puzzle_emb.weights``) as numpy arrays, e.g. from
    ``trm_jax.interop.to_torch_state_dict``; loading is strict, so a naming mismatch fails
    loudly instead of timing a differently initialised model.
    """

    def __init__(
        self,
        reference_dir: str,
        config: TRMConfig,
        optim: OptimConfig,
        state_dict: Mapping[str, np.ndarray],
        device: str,
        compile_model: bool,
    ) -> None:
        ref = import_reference(reference_dir)
        self.device = torch.device(device)
        self.config = config
        self.optim = optim
        self.global_batch_size = config.batch_size
        self.uses_cuda_adam_atan2 = ref.cuda_adam_atan2 is not None and self.device.type == "cuda"
        with self.device:
            model = ref.model_cls(reference_model_dict(config))
            tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state_dict.items()}
            model.load_state_dict(tensors, strict=True)
            head = ref.loss_head_cls(model, loss_type=config.loss_type)
            head.train()
            self._head = head
            self.model = torch.compile(head) if compile_model else head

        adam_cls = ref.cuda_adam_atan2 if self.uses_cuda_adam_atan2 else AdamATan2Torch
        adam = adam_cls(head.parameters(), lr=0, weight_decay=optim.weight_decay, betas=(optim.beta1, optim.beta2))
        if config.puzzle_emb_ndim > 0:
            signsgd = ref.signsgd_cls(
                model.puzzle_emb.buffers(), lr=0, weight_decay=optim.puzzle_emb_weight_decay, world_size=1
            )
            self.optimizers = [(signsgd, optim.puzzle_emb_lr), (adam, optim.lr)]
        else:
            self.optimizers = [(adam, optim.lr)]
        self.ema = None
        if optim.ema:
            self.ema = ref.ema_helper_cls(mu=optim.ema_rate)
            self.ema.register(self.model)
        self.step_count = 0
        self.carry: Any = None

    def to_device(self, batch: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """A numpy batch as torch tensors on this step's device."""
        return {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device) for k, v in batch.items()}

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Runs one training step; returns the (undivided) loss of this ACT step."""
        self.step_count += 1
        if self.carry is None:
            with self.device:
                self.carry = self._head.initial_carry(batch)
        self.carry, loss, _metrics, _, _ = self.model(carry=self.carry, batch=batch, return_keys=[])
        ((1.0 / self.global_batch_size) * loss).backward()
        for optimizer, base_lr in self.optimizers:
            lr = warmup_cosine_lr(
                self.step_count, base_lr, self.optim.lr_warmup_steps, self.optim.total_steps, self.optim.lr_min_ratio
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
            optimizer.zero_grad()
        if self.ema is not None:
            self.ema.update(self.model)
        return loss.detach()

    def synchronize(self, _result: Any = None) -> None:
        """Waits for the device to finish all queued work."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset_peak_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory_bytes(self) -> int | None:
        """Peak allocated device memory since the last reset (CUDA only; None on CPU)."""
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return None
