"""Makes the repository's top-level ``benchmarks`` folder importable (it is not an installed
package), and keeps every test (and the subprocesses it starts) on the CPU."""

import os
import sys

import pytest

# With libtpu installed (CI installs it for the TPU plan test) JAX would otherwise try to start a
# TPU runtime on import, and log its failure to stderr off a TPU VM.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
    """A module's identical compiles (successive train() calls, plans) are loaded from a
    persistent compilation cache instead of compiled again."""
    import jax  # noqa: PLC0415 - after JAX_PLATFORMS is set

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    saved = {name: getattr(jax.config, name) for name in names}
    jax.config.update(names[0], str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update(names[1], 0.0)
    jax.config.update(names[2], 0)
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
