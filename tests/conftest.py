"""Settings for the whole test session, made before JAX is imported:

- the ``benchmarks`` folder is importable (it is not an installed package);
- every test, and every subprocess a test starts, runs on the CPU: with libtpu installed (CI
  installs it for the TPU plan test) JAX would otherwise try to start a TPU runtime on import,
  and log its failure to stderr off a TPU VM;
- one persistent compilation cache serves the session and its subprocesses: many tests compile
  the same tiny steps (every ``train()`` jits its steps anew), and a hit loads the executable
  instead of compiling it again. Set ``JAX_COMPILATION_CACHE_DIR`` to choose the directory (it
  is then kept); by default a temporary one is removed at the end.
"""

import atexit
import os
import shutil
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _CACHE_DIR = tempfile.mkdtemp(prefix="trm-jax-test-compile-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE_DIR
    atexit.register(shutil.rmtree, _CACHE_DIR, True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
