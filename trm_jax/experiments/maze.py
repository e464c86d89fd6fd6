r"""Maze-Hard 30x30, TRM with self-attention (RoPE).

Data (1000 training and 1000 test mazes; the official builder's default adds no augmentation)::

    trm-jax data maze data/maze-30x30-hard-1k

Train (the paper used 4 GPUs; the global batch of 768 is split over every visible device)::

    trm-jax train --config maze --workdir runs/maze

Expected result (reported in the paper, not measured by this project): 85.3% exact accuracy,
in under 24 h on 4 L40S. Hyper-parameters: the official command ``epochs=50000
eval_interval=5000 lr=1e-4 puzzle_emb_lr=1e-4 weight_decay=1.0 puzzle_emb_weight_decay=1.0
arch.L_layers=2 arch.H_cycles=3 arch.L_cycles=4 ema=True``.
"""

from trm_jax.configs import base_config


def get_config():
    c = base_config()
    c.model.H_cycles, c.model.L_cycles, c.model.L_layers = 3, 4, 2
    c.optim.lr, c.optim.puzzle_emb_lr = 1e-4, 1e-4
    c.optim.weight_decay, c.optim.puzzle_emb_weight_decay = 1.0, 1.0
    # The backward pass recomputes the attention scores instead of keeping them (the same values):
    # where XLA's attention runs (no fused kernel: a CPU, cuDNN without its wheels), they would be
    # most of the step's memory. With a fused kernel there are no scores to keep.
    c.model.saved_activations = "wide_matmuls"
    c.optim.ema = True
    c.data.dataset_dir = "data/maze-30x30-hard-1k"
    c.train.epochs, c.train.eval_interval = 50_000, 5_000
    return c
