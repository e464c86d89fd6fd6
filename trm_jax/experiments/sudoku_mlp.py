r"""Sudoku-Extreme, TRM with the sequence-MLP ("mlp_t") block: the paper's best Sudoku model.

Data (1000 training puzzles x 1000 augmentations, the full Sudoku-Extreme test set)::

    trm-jax data sudoku data/sudoku-extreme-1k-aug-1000 --subsample 1000 --num-aug 1000

Train (one GPU)::

    trm-jax train --config sudoku_mlp --workdir runs/sudoku_mlp

Expected result (reported in the paper, arXiv 2510.04871, not measured by this project):
87.4% exact accuracy on the test set with 5M parameters, in under 36 h on one L40S.
Hyper-parameters: the official command ``epochs=50000 eval_interval=5000 lr=1e-4
puzzle_emb_lr=1e-4 weight_decay=1.0 puzzle_emb_weight_decay=1.0 arch.mlp_t=True
arch.pos_encodings=none arch.L_layers=2 arch.H_cycles=3 arch.L_cycles=6 ema=True``.
"""

from trm_jax.configs import base_config


def get_config():
    c = base_config()
    c.model.mlp_t = True
    c.model.pos_encodings = "none"
    c.model.H_cycles, c.model.L_cycles, c.model.L_layers = 3, 6, 2
    c.optim.lr, c.optim.puzzle_emb_lr = 1e-4, 1e-4
    c.optim.weight_decay, c.optim.puzzle_emb_weight_decay = 1.0, 1.0
    c.optim.ema = True
    c.data.dataset_dir = "data/sudoku-extreme-1k-aug-1000"
    c.train.epochs, c.train.eval_interval = 50_000, 5_000
    return c
