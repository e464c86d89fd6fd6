"""The ``sudoku_mlp`` experiment config; it lives in the package (``trm_jax/experiments/sudoku_mlp.py``, its docstring
gives the commands and the expected result) so that ``--config sudoku_mlp`` works after any install."""

from trm_jax.experiments.sudoku_mlp import get_config  # noqa: F401
