"""One process of a CPU multi-host training run (driven by test_multihost.py).

Usage: python multihost_worker.py WORKDIR NUM_PROCESSES PROCESS_ID PORT LOCAL_DEVICES RESUME SIGTERM_AT [OVERRIDES]

With NUM_PROCESSES > 1 the run goes through ``config.train.distributed`` and
``jax.distributed.initialize`` (coordinator on localhost:PORT), as on a TPU pod slice.
SIGTERM_AT > 0: the process sends itself SIGTERM after dispatching that step (through the
``on_step`` hook of ``loop.train``); 0 never. OVERRIDES: a JSON object of config overrides.
Prints one ``RESULT {json}`` line and exits as ``trm-jax train`` does: 128 + the signal number
when a signal stopped the run, else 0.
"""

import json
import os
import signal
import sys

workdir, num_processes, process_id, port, local_devices, resume, sigterm_at = sys.argv[1:8]
overrides = json.loads(sys.argv[8]) if len(sys.argv) > 8 else {}
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local_devices}"
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["JAX_COORDINATOR_ADDRESS"] = f"localhost:{port}"
os.environ["JAX_NUM_PROCESSES"] = num_processes
os.environ["JAX_PROCESS_ID"] = process_id

import jax  # noqa: E402  (after XLA_FLAGS)

from trm_jax.train import loop  # noqa: E402
from trm_test_utils import tiny_run_config  # noqa: E402


def send_sigterm_at(step: int) -> None:
    if step == int(sigterm_at):
        os.kill(os.getpid(), signal.SIGTERM)


config = tiny_run_config(
    "",
    **{
        "data.generate.kind": "sudoku",
        "data.generate.num_train": 16,
        "data.generate.num_test": 8,
        "data.generate.num_aug": 1,
        "optim.global_batch_size": 8,
        "train.eval_batch_size": 8,
        "model.halt_exploration_prob": 0.5,
        "train.distributed": int(num_processes) > 1,
        **overrides,
    },
)
result = loop.train(config, workdir, resume=resume == "1", on_step=send_sigterm_at)
print(
    "RESULT "
    + json.dumps(
        {
            "process": jax.process_index(),
            "processes": jax.process_count(),
            "devices": jax.device_count(),
            "step": result.step,
            "signal": result.stop_signal.name if result.stop_signal else None,
            "eval": result.eval_metrics,
        }
    ),
    flush=True,
)
sys.exit(128 + result.stop_signal if result.stop_signal else 0)
