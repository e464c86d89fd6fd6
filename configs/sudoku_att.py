"""The ``sudoku_att`` experiment config; it lives in the package (``trm_jax/experiments/sudoku_att.py``, its docstring
gives the commands and the expected result) so that ``--config sudoku_att`` works after any install."""

from trm_jax.experiments.sudoku_att import get_config  # noqa: F401
