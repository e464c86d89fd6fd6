"""The ``arc1`` experiment config; it lives in the package (``trm_jax/experiments/arc1.py``, its docstring
gives the commands and the expected result) so that ``--config arc1`` works after any install."""

from trm_jax.experiments.arc1 import get_config  # noqa: F401
