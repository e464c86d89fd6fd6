"""``python -m trm_jax``: the ``trm-jax`` command line (see :mod:`trm_jax.cli`)."""

import sys

from trm_jax.cli import main

sys.exit(main())
