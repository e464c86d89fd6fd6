r"""ARC-AGI-1 (training + evaluation + concept puzzles, 1000 augmentations each), attention TRM.

Data (the Kaggle "combined" JSON files under data/arc-agi/)::

    trm-jax data arc data/arc1concept-aug-1000 --preset arc1 --input-prefix data/arc-agi/arc-agi

Train (the paper used 4 H100; multi-host: add ``--config.train.distributed=true``)::

    trm-jax train --config arc1 --workdir runs/arc1

Every evaluation also scores pass@k over the augmentations and writes
``WORKDIR/eval/step_<N>/submission.json``.
Expected result (reported in the paper, not measured by this project): 44.6% pass@2 with 7M
parameters, about 3 days on 4 H100. Hyper-parameters: the reference defaults (epochs 100000,
eval every 10000, lr 1e-4, puzzle_emb_lr 1e-2, weight decay 0.1) and the official command
``arch.L_layers=2 arch.H_cycles=3 arch.L_cycles=4 ema=True``.
"""

from trm_jax.configs import base_config


def get_config():
    c = base_config()
    c.model.H_cycles, c.model.L_cycles, c.model.L_layers = 3, 4, 2
    c.optim.lr, c.optim.puzzle_emb_lr = 1e-4, 1e-2
    c.optim.weight_decay, c.optim.puzzle_emb_weight_decay = 0.1, 0.1
    # The backward pass recomputes the attention scores instead of keeping them (the same values):
    # where XLA's attention runs (no fused kernel: a CPU, cuDNN without its wheels), they would be
    # most of the step's memory. With a fused kernel there are no scores to keep.
    c.model.saved_activations = "wide_matmuls"
    c.optim.ema = True
    c.data.dataset_dir = "data/arc1concept-aug-1000"
    c.data.evaluator = "arc"
    c.train.epochs, c.train.eval_interval = 100_000, 10_000
    return c
