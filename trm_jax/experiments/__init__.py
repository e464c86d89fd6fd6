"""The experiment configs shipped with the package (``get_config()`` files, big_vision style).

``quickstart``, ``sudoku_mlp``, ``sudoku_att``, ``maze``, ``arc1`` and ``arc2``: select one by
name (``trm-jax train --config quickstart``) or by path to any such file. They are loaded with
:func:`trm_jax.configs.load_config`, not imported as modules.
"""
