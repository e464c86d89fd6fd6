"""The ``quickstart_control`` experiment config; it lives in the package
(``trm_jax/experiments/quickstart_control.py``, its docstring gives the command and the expected result)."""

from trm_jax.experiments.quickstart_control import get_config  # noqa: F401
