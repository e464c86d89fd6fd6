"""The ``maze`` experiment config; it lives in the package (``trm_jax/experiments/maze.py``, its docstring
gives the commands and the expected result) so that ``--config maze`` works after any install."""

from trm_jax.experiments.maze import get_config  # noqa: F401
