"""Parity in float64: our float64 model against the official code computing in float64.

The fixtures in tests/fixtures/float64 were recorded by ``tests/fixtures/record.py --float64``:
the reference with every tensor in float64, including the RMSNorm, RoPE tables and Q-head
output that it otherwise keeps in float32. Both sides then compute the same function in
float64, where rounding is ~1e-16 relative; through the recursion (<= 2 x 4 network calls
per step, 3 steps with the carry flowing, and 4 evaluation steps) it stays many orders below
1e-9. So the replay of tests/test_parity.py runs here at rtol 1e-9 (atol 1e-12), with no
noise-floor allowance: any difference in the function (an operation, a constant, a cast to
float32 on either side) shows at 1e-7 or more. Measured: every fixture also passes at 1e-11;
the worst difference is 2.0e-12 relative (mlp_t, the evaluation logits after 4 steps; the
attention fixtures agree to 1e-13).

It runs in a subprocess: 64-bit JAX must be enabled before JAX is imported.
"""

from __future__ import annotations

import glob
import os

from test_parity import FIXTURE_DIR

FLOAT64_DIR = FIXTURE_DIR / "float64"
RTOL, ATOL = 1e-9, 1e-12

SCRIPT = """
import glob, sys
sys.path.insert(0, {tests!r})
import test_parity as tp

tp.ACT_RTOL = tp.LATER_STEP_ACT_RTOL = tp.LOSS_RTOL = tp.GRAD_RTOL = {rtol!r}
tp.ACT_ATOL = tp.GRAD_ATOL = tp.METRIC_ATOL = {atol!r}
tp.rounding_noise = lambda run, variables, reference, seeds=(): {{k: 0.0 for k in reference}}
paths = sorted(glob.glob({directory!r} + "/*.npz"))
assert paths, "no float64 fixtures"
for path in paths:
    fx = tp.Fixture(path)
    assert fx.config.forward_dtype == "float64", path
    assert fx.variables["params"]["lm_head"]["kernel"].dtype.name == "float64", path
    tp.test_weights_round_trip(fx)
    tp.test_three_training_steps(fx)
    tp.test_evaluation_to_halt(fx)
    print("FLOAT64_PARITY_OK", path)
"""


def test_float64_parity_with_the_official_code_at_1e_9():
    from test_train_step import TESTS_DIR, run_with_devices  # noqa: PLC0415

    paths = sorted(glob.glob(os.path.join(FLOAT64_DIR, "*.npz")))
    assert paths, f"no fixtures in {FLOAT64_DIR}"
    out = run_with_devices(
        SCRIPT.format(tests=str(TESTS_DIR), rtol=RTOL, atol=ATOL, directory=str(FLOAT64_DIR)), devices=1, x64=True
    )
    assert out.count("FLOAT64_PARITY_OK") == len(paths), out[-2000:]
