"""Memory plans of a run on accelerators, made ahead of time from any machine (``trm-jax plan``).

:mod:`~trm_jax.plan.targets` describes what to compile for (a TPU slice through libtpu, NVIDIA
GPUs through jax's CUDA plugin and :mod:`~trm_jax.plan.gpu_specs`, or the local devices),
:mod:`~trm_jax.plan.shapes` the dataset fields without the dataset, and
:mod:`~trm_jax.plan.planner` compiles the train and eval steps for it
(:mod:`trm_jax.train.step_memory`) and finds what fits (:mod:`trm_jax.train.memory_search`).
"""
