r"""Quickstart: a small TRM on generated Sudoku that learns visibly on a laptop CPU.

Nothing to download: the first run generates 300 training puzzles (x 8 augmentations) and
100 test puzzles into WORKDIR/data (about a minute), then trains::

    trm-jax train --config quickstart --workdir /tmp/qs

Expected result, measured on a 2-core CPU machine (JAX 0.10.2) in a fresh clone with
``pip install -e . && trm-jax train --config quickstart --workdir runs/quickstart``:
1 min 52 s wall time in all on an otherwise idle machine (commit e57b257: data generation, then
1500 steps at about 18 steps/s), 4 min 17 s in an earlier run at about 6.3 steps/s, 9 min when
the machine was shared with other jobs (install excluded, dependencies already present); token
accuracy on the 100 generated test puzzles 43.6% / 62.4% / 67.4% at steps 500 / 1000 / 1500
(chance is about 11%; the givens alone are about 30%), exact accuracy 0% (whole-grid solutions
need the paper-sized model and run); training loss 2.56 at step 50 -> 1.51 at 500 -> 0.99 at
1000 -> 0.83 at 1500. Curves: WORKDIR/curves.png. Deterministic: three runs on this machine
gave the same numbers.
"""

from trm_jax.configs import base_config


def get_config():
    c = base_config()
    c.model.mlp_t = True
    c.model.pos_encodings = "none"
    c.model.hidden_size, c.model.num_heads, c.model.expansion = 48, 2, 2.0
    c.model.H_cycles, c.model.L_cycles, c.model.L_layers = 2, 2, 1
    # One puzzle-embedding position, as in the paper's models.
    c.model.puzzle_emb_ndim, c.model.puzzle_emb_len = 48, 1
    c.model.halt_max_steps = 16
    c.model.forward_dtype = "float32"  # bfloat16 is slow on most CPUs
    # The paper's Sudoku loss is stablemax; softmax learns this small model faster here.
    c.model.loss_type = "softmax_cross_entropy"
    c.optim.global_batch_size = 32
    c.optim.total_steps = 7000
    c.optim.lr, c.optim.lr_min_ratio, c.optim.lr_warmup_steps = 2e-3, 0.1, 200
    c.optim.puzzle_emb_lr = 1e-3
    c.optim.weight_decay, c.optim.puzzle_emb_weight_decay = 0.1, 0.1
    # Evaluation uses the EMA weights; 0.999 averages out the last ~1000 steps' noise.
    c.optim.ema, c.optim.ema_rate = True, 0.999
    # 9x9 Sudoku with 45 blanks (36 givens), unique solutions; train and test puzzles come from
    # independent random streams and no test grid appears in the (augmented) training set.
    c.data.generate.kind = "sudoku"
    c.data.generate.blanks = 45
    c.data.generate.num_train, c.data.generate.num_test = 3000, 200
    c.data.generate.num_aug = 1
    c.data.generate.workers = 2
    c.train.epochs = 1  # unused: optim.total_steps is set
    c.train.eval_every_steps = 1750
    c.train.eval_batch_size = 200  # the 200 test puzzles in one batch (a multiple of 8 devices)
    c.train.log_every = 100
    c.train.depth_curve_steps = 32  # exact accuracy after 1, 2, 4, ..., 32 test-time supervision steps
    return c
