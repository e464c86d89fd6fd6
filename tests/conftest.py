"""Makes the repository's top-level ``benchmarks`` folder importable (it is not an installed
package), and keeps every test (and the subprocesses it starts) on the CPU."""

import os
import sys

# With libtpu installed (CI installs it for the TPU plan test) JAX would otherwise try to start a
# TPU runtime on import, and log its failure to stderr off a TPU VM.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
