"""trm-jax: the Tiny Recursive Model (TRM) as pure JAX/Flax functions."""

__version__ = "0.2.0"
