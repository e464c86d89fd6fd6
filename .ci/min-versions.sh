#!/usr/bin/env bash
# Smoke test on the oldest supported versions: a fresh venv on the oldest Python that pyproject.toml
# allows (requires-python), exactly the pins of .ci/min-versions.txt plus this checkout (not
# editable), then .ci/smoke.sh (train, checkpoint, evaluate, predict, resume through `trm-jax`).
# Exits non-zero if the interpreter is missing, the install fails or the smoke fails.
#
#   bash .ci/min-versions.sh            # MIN_PYTHON=/path/to/python3.10 to choose the interpreter
set -euo pipefail
cd "$(dirname "$0")/.."

min_py=$(sed -n 's/^requires-python = ">=\([0-9]*\.[0-9]*\)"$/\1/p' pyproject.toml)
[ -n "$min_py" ] || { echo "min-versions: FAILED: cannot read requires-python from pyproject.toml"; exit 1; }

if [ -n "${MIN_PYTHON:-}" ]; then
  candidates=("$MIN_PYTHON")
else
  candidates=("$(command -v "python$min_py" || true)")
  pyenv_root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
  candidates+=($(ls -d "$pyenv_root"/versions/"$min_py".*/bin/python 2>/dev/null | sort -V -r || true))
fi
python=
for candidate in "${candidates[@]}"; do
  # A pyenv shim on PATH may exist without that version being active: ask the interpreter itself.
  if [ -n "$candidate" ] && "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$min_py'.split('.'))))" 2>/dev/null; then
    python=$candidate
    break
  fi
done
if [ -z "$python" ]; then
  echo "min-versions: FAILED: no Python $min_py interpreter (looked for python$min_py on PATH and in" \
       "pyenv's versions/$min_py.*, or MIN_PYTHON=${MIN_PYTHON:-unset}); install one or set MIN_PYTHON=/path/to/python$min_py"
  exit 1
fi

venv=$(mktemp -d "${TMPDIR:-/tmp}/trm-min-venv.XXXXXX")
trap 'rm -rf "$venv"' EXIT
echo "min-versions: Python $("$python" -c 'import sys; print(sys.version.split()[0])') ($python), pins from .ci/min-versions.txt"
"$python" -m venv "$venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet --requirement .ci/min-versions.txt --constraint .ci/min-versions.txt . \
  || { echo "min-versions: FAILED: cannot install the pinned versions"; exit 1; }
"$venv/bin/python" -m pip check || { echo "min-versions: FAILED: pip check"; exit 1; }
env -u PYTHONPATH PATH="$venv/bin:$PATH" bash .ci/smoke.sh
