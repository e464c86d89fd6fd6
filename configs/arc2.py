r"""ARC-AGI-2 (training2 + evaluation2 + concept puzzles, 1000 augmentations each), attention TRM.

Data (the Kaggle "combined" JSON files under data/arc-agi/)::

    trm-jax data arc data/arc2concept-aug-1000 --preset arc2 --input-prefix data/arc-agi/arc-agi

Train::

    trm-jax train --config configs/arc2.py --workdir runs/arc2

Expected result (reported in the paper, not measured by this project): 7.8% pass@2.
Hyper-parameters as ARC-AGI-1 (``configs/arc1.py``); only the data differ.
"""

from trm_jax.configs import base_config


def get_config():
    c = base_config()
    c.model.H_cycles, c.model.L_cycles, c.model.L_layers = 3, 4, 2
    c.optim.lr, c.optim.puzzle_emb_lr = 1e-4, 1e-2
    c.optim.weight_decay, c.optim.puzzle_emb_weight_decay = 0.1, 0.1
    c.optim.ema = True
    c.data.dataset_dir = "data/arc2concept-aug-1000"
    c.data.evaluator = "arc"
    c.train.epochs, c.train.eval_interval = 100_000, 10_000
    return c
