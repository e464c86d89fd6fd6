"""One process of a CPU multi-host training run (driven by test_multihost.py).

Usage: python multihost_worker.py WORKDIR NUM_PROCESSES PROCESS_ID PORT LOCAL_DEVICES STOP_AT RESUME

With NUM_PROCESSES > 1 the run goes through ``config.train.distributed`` and
``jax.distributed.initialize`` (coordinator on localhost:PORT), as on a TPU pod slice.
STOP_AT = 0 runs to the end. Prints one ``RESULT {json}`` line.
"""

import json
import os
import sys

workdir, num_processes, process_id, port, local_devices, stop_at, resume = sys.argv[1:8]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local_devices}"
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["JAX_COORDINATOR_ADDRESS"] = f"localhost:{port}"
os.environ["JAX_NUM_PROCESSES"] = num_processes
os.environ["JAX_PROCESS_ID"] = process_id

import jax  # noqa: E402  (after XLA_FLAGS)

from trm_jax.train import loop  # noqa: E402
from trm_test_utils import tiny_run_config  # noqa: E402

config = tiny_run_config(
    "", **{"data.generate.kind": "sudoku", "data.generate.num_train": 16, "data.generate.num_test": 8,
           "data.generate.num_aug": 1, "optim.global_batch_size": 8, "train.eval_batch_size": 8,
           "model.halt_exploration_prob": 0.5, "train.distributed": int(num_processes) > 1})
result = loop.train(config, workdir, resume=resume == "1", stop_at=int(stop_at) or None)
print("RESULT " + json.dumps({"process": jax.process_index(), "processes": jax.process_count(),
                              "devices": jax.device_count(), "step": result.step,
                              "eval": result.eval_metrics}), flush=True)
