r"""Quickstart control: the quickstart's network and data without the recursion.

The quickstart's claim is that recursion with deep supervision solves puzzles one pass of the
same network does not. This config removes the recursion and nothing else: the same network
(width, layers, puzzle embedding), the same generated puzzles, optimiser and evaluation, but
T=1 cycle of n=1 latent update (one pass of the network for z, one for y) and one supervision
step (``halt_max_steps=1``: no carry between steps, no halting). Each step is cheaper, so it
trains for more steps, chosen so that the whole command takes about the quickstart's wall time::

    trm-jax train --config quickstart_control --workdir runs/quickstart_control

Expected result, measured on this project's 2-core CPU machine (Intel Xeon, jax 0.10.2) at
commit 1efd9c2 (``python benchmarks/quickstart_experiment.py --repeat 1``, which runs it after the
quickstart): 7 min 5 s of wall time (another job shared the machine); **0.0% of the 200 held-out
puzzles solved exactly**, 81.8% of cells right; more test-time steps do not help (0% after 1 to
32). The quickstart solves 87.0%.
"""

from trm_jax.experiments import quickstart


def get_config():
    c = quickstart.get_config()
    c.model.H_cycles, c.model.L_cycles = 1, 1
    c.model.halt_max_steps = 1
    c.optim.total_steps = 12500  # about the quickstart's wall time on a 2-core CPU (measured: see above)
    c.train.eval_every_steps = 2500
    return c
