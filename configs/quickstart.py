"""The ``quickstart`` experiment config; it lives in the package (``trm_jax/experiments/quickstart.py``, its docstring
gives the commands and the expected result) so that ``--config quickstart`` works after any install."""

from trm_jax.experiments.quickstart import get_config  # noqa: F401
