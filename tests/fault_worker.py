"""Worker of tests/test_faults.py: a tiny training run with a fault injected at a chosen point.

    python tests/fault_worker.py WORKDIR DATASET POINT [--resume]

POINT (the checkpoint save of step 4 of a 6-step run that saves at steps 2, 4 and 6):

* ``none``: no fault;
* ``kill-before-save``: SIGKILL as the save is asked for, before anything is written;
* ``kill-during-save``: SIGKILL right after the asynchronous write was started;
* ``kill-before-commit``: SIGKILL once every file is written, before orbax renames the
  temporary directory into place;
* ``kill-after-commit``: SIGKILL right after the rename;
* ``term-during-generation``: SIGTERM halfway through generating the run's dataset;
* ``term-during-build``: SIGTERM while the generated puzzles are turned into the dataset;
* ``term-during-compile``: SIGTERM while the train step compiles (start-up memory check);
* ``term-swallowed-during-compile``: SIGTERM raised inside a garbage-collector callback just
  after that compile (its exception is swallowed there);
* ``hold``: train for ever, slowly (a live holder of the run directory).

The hooks wrap the library's own functions at those points; nothing in the package knows of
them. Exits as ``trm-jax train`` does (the CLI's main).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from trm_test_utils import sigterm_in_gc_callback, tiny_run_config  # noqa: E402

KILL_STEP = 4
RUN = {"optim.total_steps": 6, "train.eval_every_steps": 2, "train.log_every": 1, "train.max_to_keep": 5}


def _kill(sig: int = signal.SIGKILL) -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), sig)


def _inject(point: str) -> None:
    from orbax.checkpoint._src.path import atomicity  # noqa: PLC0415

    from trm_jax.data import generate_sudoku, sudoku  # noqa: PLC0415
    from trm_jax.train import checkpoint, memory_check  # noqa: PLC0415

    if point in ("kill-before-save", "kill-during-save"):
        real_save = checkpoint.Checkpointer.save

        def save(self, step, *args, **kwargs):
            if step == KILL_STEP and point == "kill-before-save":
                self.wait_until_finished()  # step 2's asynchronous save is complete: killed between saves
                _kill()
            started = real_save(self, step, *args, **kwargs)
            if step == KILL_STEP:
                _kill()
            return started

        checkpoint.Checkpointer.save = save
    elif point in ("kill-before-commit", "kill-after-commit"):
        real_finalize = atomicity.AtomicRenameTemporaryPath.finalize

        async def finalize(self, *args, **kwargs):
            mine = Path(str(self._final_path)).name == str(KILL_STEP)
            if mine and point == "kill-before-commit":
                _kill()
            result = await real_finalize(self, *args, **kwargs)
            if mine:
                _kill()
            return result

        atomicity.AtomicRenameTemporaryPath.finalize = finalize
    elif point == "term-during-generation":
        real_row = generate_sudoku._generate_row

        def row(task):
            if task[1] == "train" and task[2] == 8:  # the ninth of 16 training puzzles
                _kill(signal.SIGTERM)
            return real_row(task)

        generate_sudoku._generate_row = row
    elif point == "term-during-build":
        real_metadata = sudoku.sudoku_metadata

        def metadata(arrays):  # the train split is built, the test split not yet
            _kill(signal.SIGTERM)
            return real_metadata(arrays)

        sudoku.sudoku_metadata = metadata
    elif point == "term-during-compile":
        real_compile = memory_check.compile_train_step

        def compile_train_step(*args, **kwargs):
            # Delivered while XLA compiles (native code): Python sees it once the compile returns.
            threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()
            return real_compile(*args, **kwargs)

        memory_check.compile_train_step = compile_train_step
    elif point == "term-swallowed-during-compile":
        real_compile = memory_check.compile_train_step

        def compile_train_step(*args, **kwargs):
            compiled = real_compile(*args, **kwargs)
            sigterm_in_gc_callback()
            return compiled

        memory_check.compile_train_step = compile_train_step


def main() -> int:
    workdir, dataset, point = sys.argv[1], sys.argv[2], sys.argv[3]
    resume = "--resume" in sys.argv[4:]
    from trm_jax import cli  # noqa: PLC0415
    from trm_jax import configs as configs_lib  # noqa: PLC0415

    overrides = dict(RUN)
    if point.startswith("term-during-g") or point.startswith("term-during-b"):
        overrides.update(
            {
                "data.dataset_dir": "",
                "data.generate.kind": "sudoku",
                "data.generate.num_train": 16,
                "data.generate.num_test": 4,
                "data.generate.blanks": 45,
            }
        )
    if point in ("term-during-compile", "term-swallowed-during-compile"):
        overrides["train.device_memory_gib"] = 1000.0  # a budget: the check compiles before the loop
    if point == "hold":
        overrides.update({"optim.total_steps": 1_000_000, "train.eval_every_steps": 1_000_000})
    config = tiny_run_config(dataset, **overrides)
    _inject(point)
    if point == "hold":
        from trm_jax.train import loop  # noqa: PLC0415

        loop.train(config, workdir, on_step=lambda step: time.sleep(0.2))
        return 0
    # The run's config as a config file of its own, for the command line.
    config_file = Path(workdir).parent / f"{Path(workdir).name}_config.py"
    text = json.dumps(configs_lib.config_to_dict(config))
    config_file.write_text(
        f"import json\nimport ml_collections\n\n\ndef get_config():\n"
        f"    return ml_collections.ConfigDict(json.loads({text!r}))\n"
    )
    return cli.main(["train", "--config", str(config_file), "--workdir", workdir] + ["--resume"] * resume)


if __name__ == "__main__":
    sys.exit(main())
