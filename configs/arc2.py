"""The ``arc2`` experiment config; it lives in the package (``trm_jax/experiments/arc2.py``, its docstring
gives the commands and the expected result) so that ``--config arc2`` works after any install."""

from trm_jax.experiments.arc2 import get_config  # noqa: F401
