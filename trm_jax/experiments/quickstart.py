r"""Quickstart: a small TRM that learns to solve held-out Sudoku on a laptop CPU, and needs its recursion to.

The task: 9x9 Sudoku with 45 blanks (36 givens), each with a unique solution, generated offline
(``data.generate``: 3000 training puzzles x 2 (one augmentation), 200 test puzzles from an
independent random stream; no test grid is in the augmented training set). The model: the
paper's Sudoku architecture (``mlp_t``, one puzzle-embedding position) at width 48 with one
layer, T=2 cycles of n=2 latent updates per step, and deep supervision over up to 16 steps
with the learned halting head (101k parameters). The first run generates the data into
WORKDIR/data (about 10 s), then trains 7000 steps::

    trm-jax train --config quickstart --workdir runs/quickstart

Expected result, measured on this project's 2-core CPU machine (Intel Xeon, jax 0.10.2, float32)
at commit 1efd9c2 with ``python benchmarks/quickstart_experiment.py --repeat 1``: **87.0% of the
200 held-out puzzles solved exactly** (cell accuracy 98.2%), in 6 min 40 s of wall time (data,
training, 4 evaluations and the depth curve; another job shared the machine). The depth curve the
run prints and plots (WORKDIR/depth_curve.png): exact accuracy after 1 / 2 / 4 / 8 / 16 / 32
test-time supervision steps 0% / 23.0% / 81.0% / 89.0% / 87.0% / 87.0%: one pass of the network
solves none. The learned halting head stops after 4.10 steps on average (78.5% exact there). The
control without recursion (``quickstart_control``) solves none. The figure depends on float
rounding through training (a chaotic process): on another CPU or with another thread count expect
a different one near it (a 2-core AMD EPYC also gave 87.0%, with another depth curve).
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
