r"""Sudoku-Extreme, TRM with self-attention (RoPE) instead of the sequence MLP.

Data::

    trm-jax data sudoku data/sudoku-extreme-1k-aug-1000 --subsample 1000 --num-aug 1000

Train::

    trm-jax train --config sudoku_att --workdir runs/sudoku_att

Expected result (reported in the paper, not measured by this project): 74.7% exact accuracy.
Hyper-parameters: the official command ``epochs=50000 eval_interval=5000 lr=1e-4
puzzle_emb_lr=1e-4 weight_decay=1.0 puzzle_emb_weight_decay=1.0 arch.L_layers=2
arch.H_cycles=3 arch.L_cycles=6 ema=True``: those of ``sudoku_mlp``; only the
network differs.
"""

from pathlib import Path

from trm_jax.configs import load_config_file


def get_config():
    c = load_config_file(str(Path(__file__).with_name("sudoku_mlp.py")))
    c.model.mlp_t = False
    c.model.pos_encodings = "rope"
    # The backward pass recomputes the attention scores instead of keeping them (the same values):
    # where XLA's attention runs (no fused kernel: a CPU, cuDNN without its wheels), they would be
    # most of the step's memory. With a fused kernel there are no scores to keep.
    c.model.saved_activations = "wide_matmuls"
    return c
