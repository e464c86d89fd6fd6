#!/usr/bin/env bash
# Smoke test of the trm-jax command line with whatever jax/orbax/flax the current environment has:
# build a tiny Sudoku dataset, train 4 steps (checkpointing), evaluate, predict, resume to step 8,
# evaluate again. Uses the `trm-jax` and `python` found on PATH (CI puts the min-versions venv first).
# Exits non-zero on the first failure; the last line says PASSED or FAILED.
#
#   PATH=/path/to/venv/bin:$PATH bash .ci/smoke.sh
set -uo pipefail
cd "$(dirname "$0")/.."

start=$SECONDS
work=$(mktemp -d "${TMPDIR:-/tmp}/trm-smoke.XXXXXX")
trap 'rm -rf "$work"' EXIT
stage=setup

fail() {
  echo "smoke: FAILED at '$stage'${1:+: $1} (see the output above)"
  exit 1
}

versions=$(python - <<'EOF'
import sys
from importlib.metadata import version
names = ["jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "chex", "ml-collections", "tqdm", "matplotlib"]
print(f"python {sys.version.split()[0]}, " + ", ".join(f"{n} {version(n)}" for n in names))
EOF
) || fail "cannot read the installed versions"
echo "smoke: $versions"
echo "smoke: trm-jax is $(command -v trm-jax)"

# The tiny model of tests/test_cli.py.
TINY=(--config.model.hidden_size=16 --config.model.num_heads=2 --config.model.expansion=1
      --config.model.H_cycles=1 --config.model.L_cycles=1 --config.model.L_layers=1
      --config.model.halt_max_steps=2 --config.model.puzzle_emb_ndim=16 --config.model.puzzle_emb_len=1
      --config.optim.global_batch_size=4 --config.optim.total_steps=4 --config.train.eval_every_steps=4
      --config.train.eval_batch_size=4 --config.train.progress_bar=false
      --config.train.tensorboard=false --config.data.generate.kind=)
PUZZLE="..3.2.6..9..3.5..1..18.64....81.29..7.......8..67.82....26.95..8..2.3..9..5.1.3.."

# check_json FILE EXPR: FILE ends with a JSON object j (one line or indented) for which the Python EXPR holds.
check_json() {
  python - "$1" "$2" <<'EOF' || fail "unexpected output: $(tail -n 1 "$1")"
import json, sys
text = open(sys.argv[1]).read().strip()
j = json.loads(text[text.rfind("\n{") + 1:])
sys.exit(0 if eval(sys.argv[2]) else 1)
EOF
}

stage="data sudoku"
trm-jax data sudoku "$work/data" --source tests/data/sudoku_small --num-aug 3 || fail

stage="train 4 steps"
trm-jax train --config quickstart "${TINY[@]}" "--config.data.dataset_dir=$work/data" --workdir "$work/run" \
  | tee "$work/train.out"
[ "${PIPESTATUS[0]}" -eq 0 ] || fail
check_json "$work/train.out" 'j["step"] == 4 and not j["interrupted"]'
[ -d "$work/run/checkpoints/4" ] || fail "no checkpoint for step 4"

stage="evaluate"
trm-jax evaluate --workdir "$work/run" | tee "$work/eval.out"
[ "${PIPESTATUS[0]}" -eq 0 ] || fail
check_json "$work/eval.out" 'j["count"] == 3 and 0 <= j["accuracy"] <= 1'

stage="predict"
trm-jax predict --workdir "$work/run" --puzzle "$PUZZLE" --png "$work/p.png" | tee "$work/predict.out"
[ "${PIPESTATUS[0]}" -eq 0 ] || fail
grep -q "valid solution:" "$work/predict.out" && [ -s "$work/p.png" ] || fail "no solution printed or no PNG"

stage="resume to step 8"
trm-jax train --resume --workdir "$work/run" --config.optim.total_steps=8 | tee "$work/resume.out"
[ "${PIPESTATUS[0]}" -eq 0 ] || fail
grep -q "resumed $work/run at step 4/8" "$work/resume.out" || fail "did not resume from step 4"
check_json "$work/resume.out" 'j["step"] == 8 and not j["interrupted"]'
[ -d "$work/run/checkpoints/8" ] || fail "no checkpoint for step 8"

stage="evaluate step 8"
trm-jax evaluate --workdir "$work/run" --step 8 | tee "$work/eval8.out"
[ "${PIPESTATUS[0]}" -eq 0 ] || fail
check_json "$work/eval8.out" 'j["count"] == 3'

echo "smoke: PASSED (data, train, checkpoint, evaluate, predict, resume) in $((SECONDS - start)) s with $versions"
