"""Writes ``colab/trm_jax_colab.ipynb`` from the cells below (no outputs, stable cell ids).

Edit the cells here, then regenerate::

    python colab/make_notebook.py

``tests/test_notebook.py`` executes the committed notebook and checks it matches this script.
Code cells carry a tag (cell metadata ``tags``) that the test uses to find their outputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

from trm_jax.fileio import atomic_write

NOTEBOOK = Path(__file__).resolve().parent / "trm_jax_colab.ipynb"

INTRO = """\
# Tiny Recursive Models in JAX: train a TRM on Sudoku

A Tiny Recursive Model (TRM, [arXiv 2510.04871](https://arxiv.org/abs/2510.04871)) is a small
network applied over and over: it refines a latent state and a current answer for several
recursion cycles, then an adaptive-halting head decides whether to stop or to run another
supervision step. This notebook trains one with **trm-jax** on freshly generated Sudoku puzzles
(nothing to download), plots its training curves, shows puzzles it solved, and reloads the saved
checkpoint to evaluate it and solve a brand-new puzzle.

**Accelerator:** *Runtime → Change runtime type* picks CPU, GPU or TPU. Training shards every
batch over **all** devices JAX sees (one GPU, or the 8 cores of a TPU), so nothing else changes.
The default settings are the packaged `quickstart` config: a 101k-parameter TRM that learns to
solve 45-blank Sudoku it has never seen (87.0% of 200 held-out puzzles in about 5 minutes on a
2-core CPU; a GPU or TPU runtime is faster), and shows that one pass of the network solves none.
"""

INSTALL_MD = """\
## 1. Install

In Colab this installs trm-jax with pip (the experiment configs ship inside the package), from
a copy of the repository uploaded to the runtime as `./trm-jax` if there is one, else from
`REPO_URL`: **set `REPO_URL`** to the repository's git URL in that case. Colab's own `jax` (with
its GPU/TPU support) already satisfies the requirement and is kept. Outside Colab the cell
assumes trm-jax is already installed (`pip install -e .` in a checkout).
"""

INSTALL = """\
import os
import subprocess
import sys
from pathlib import Path

# >>> EDIT: the git URL of the trm-jax repository (or set the TRM_REPO_URL environment variable),
# unless a copy of the repository is uploaded to the runtime as ./trm-jax (installed from there).
REPO_URL = os.environ.get("TRM_REPO_URL", "https://github.com/YOUR-GITHUB-USER/trm-jax.git")

IN_COLAB = "google.colab" in sys.modules
SKIP_INSTALL = os.environ.get("TRM_NOTEBOOK_SKIP_INSTALL") == "1"  # set by tests/test_notebook.py
REPO_DIR = Path(os.environ.get("TRM_NOTEBOOK_REPO_DIR", "trm-jax")).resolve()


def sh(*cmd: str) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


if IN_COLAB and not SKIP_INSTALL:
    if (REPO_DIR / "pyproject.toml").is_file():  # a local copy of the repository
        sh(sys.executable, "-m", "pip", "install", "--quiet", str(REPO_DIR))
    elif "YOUR-GITHUB-USER" in REPO_URL:
        raise ValueError(f"set REPO_URL at the top of this cell to the trm-jax repository's git URL, "
                         f"or upload a copy of the repository to {REPO_DIR}")
    else:
        sh(sys.executable, "-m", "pip", "install", "--quiet", f"git+{REPO_URL}")
else:
    print("not installing (outside Colab or TRM_NOTEBOOK_SKIP_INSTALL=1): using the installed trm_jax")
"""

DEVICES = """\
import jax

%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, display

from trm_jax.data import render  # its figures are shown with display(fig)

print(f"jax {jax.__version__}, default backend: {jax.default_backend()}")
for device in jax.devices():
    print("  ", device)
print(f"{jax.device_count()} device(s): every batch is split across all of them")
"""

PARAMS_MD = """\
## 2. Settings

The quickstart config, adjusted so that batches split evenly over the devices. The environment
variable `TRM_NOTEBOOK_TINY=1` (used by the repository's test) shrinks everything to a few seconds
of training; change any value here like `config.optim.total_steps = 4000`.
"""

PARAMS = """\
import math

from trm_jax import configs as configs_lib

TINY = os.environ.get("TRM_NOTEBOOK_TINY") == "1"
WORKDIR = Path(os.environ.get("TRM_NOTEBOOK_WORKDIR", "runs/quickstart")).resolve()

config = configs_lib.load_config("quickstart")
if TINY:  # seconds on one CPU core: proves the notebook runs, learns little
    configs_lib.apply_overrides(config, {
        "model.hidden_size": 16, "model.num_heads": 2, "model.expansion": 1.0,
        "model.H_cycles": 1, "model.L_cycles": 1, "model.L_layers": 1,
        "model.puzzle_emb_ndim": 16, "model.halt_max_steps": 2,
        "optim.global_batch_size": 8, "optim.total_steps": 40, "optim.lr_warmup_steps": 5,
        "optim.lr": 1e-3, "data.generate.num_train": 12, "data.generate.num_test": 6,
        "data.generate.num_aug": 3, "train.eval_every_steps": 20, "train.log_every": 10,
        "train.eval_batch_size": 8, "train.progress_bar": False,
    })
else:
    config.data.generate.workers = os.cpu_count() or 1

# Batches are split over every device, so their sizes must be multiples of the device count.
n_devices = jax.device_count()
config.optim.global_batch_size = math.ceil(config.optim.global_batch_size / n_devices) * n_devices
config.train.eval_batch_size = math.ceil(config.train.eval_batch_size / n_devices) * n_devices
config.data.dataset_dir = str(WORKDIR / "data")

print("run directory:", WORKDIR)
print("model:", {k: config.model[k] for k in ("hidden_size", "H_cycles", "L_cycles", "L_layers",
                                               "mlp_t", "halt_max_steps")})
print("optim:", {k: config.optim[k] for k in ("global_batch_size", "total_steps", "lr")})
print("data:", dict(config.data.generate))
"""

DATASET_MD = """\
## 3. A generated Sudoku dataset

Unique-solution puzzles that need search (not just singles), made on the spot; each training
puzzle also appears in `num_aug` symmetry-transformed copies (digit relabelling, band/stack and
row/column permutations, transposition). The test puzzles are never augmented.
"""

DATASET = """\
import tempfile
import time

from trm_jax.data.generate_sudoku import generate_sudoku_csvs
from trm_jax.data.loader import PuzzleLoader
from trm_jax.data.sudoku import build_sudoku_dataset

data_dir = Path(config.data.dataset_dir)
gen = config.data.generate
if (data_dir / "train" / "dataset.json").is_file():
    print(f"reusing the dataset in {data_dir}")
else:
    start = time.perf_counter()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as csv_dir:
        generate_sudoku_csvs(csv_dir, gen.num_train, gen.num_test, seed=gen.seed, workers=gen.workers)
        build_sudoku_dataset(data_dir, source_dir=csv_dir, hub_repo=None, num_aug=gen.num_aug, seed=gen.seed)
    print(f"built {data_dir} in {time.perf_counter() - start:.1f} s")

train_meta = PuzzleLoader(data_dir, "train", 1).metadata
test_loader = PuzzleLoader(data_dir, "test", 1, test_mode=True)
print(f"train: {train_meta.total_puzzles} examples ({train_meta.total_groups} puzzles x augmentations); "
      f"test: {test_loader.metadata.total_puzzles} puzzles; tokens per puzzle: {train_meta.seq_len}")
example = next(iter(test_loader))
display(render.render_sudoku(example["inputs"][0], target=example["labels"][0], title="a test puzzle"))
"""

TRAIN_MD = """\
## 4. Train

`trm_jax.train.loop.train` logs loss and accuracy, evaluates with the EMA weights every
`train.eval_every_steps` steps, and writes everything to the run directory: `config.json`,
`metrics.csv`, `checkpoints/<step>/` and `curves.png`. Interrupting the cell (■) saves a
checkpoint; running it again continues from there (`resume=True`), and a finished run is not
repeated. The same run from a shell: `trm-jax train --config quickstart --workdir DIR`.
"""

TRAIN = """\
from trm_jax.train import loop

start = time.perf_counter()
result = loop.train(config, WORKDIR, resume=True)
print(f"stopped at step {result.step}/{result.total_steps} after {time.perf_counter() - start:.0f} s"
      + (" (interrupted: run this cell again to continue)" if result.interrupted else ""))
"""

CURVES_MD = """\
## 5. Training curves and the recursion at work

Read back from `metrics.csv` (train: averages over `train.log_every` steps; eval: the test split).
Then the depth curve the finished run wrote (`depth_curve.json`, `train.depth_curve_steps`):
the share of test puzzles solved exactly after 1, 2, 4, ... supervision steps at test time, and
where the learned halting head stops. One pass of the network solves next to none; the
recursion solves them. (Shell: `trm-jax evaluate --workdir DIR --depth-curve 16`.)
"""

CURVES = """\
from trm_jax.train.metrics_log import read_metrics

series = read_metrics(WORKDIR / "metrics.csv")
panels = [("lm_loss", "token cross-entropy"), ("accuracy", "token accuracy"),
          ("exact_accuracy", "puzzles solved exactly")]
fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.4))
for ax, (name, title) in zip(axes, panels):
    for split, style in (("train", "-"), ("eval", "o--")):
        points = series.get(f"{split}/{name}", [])
        if points:
            ax.plot([s for s, _ in points], [v for _, v in points], style, ms=4, label=split)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend()
fig.tight_layout()
plt.show()
last_eval = {tag.split("/", 1)[1]: points[-1] for tag, points in series.items() if tag.startswith("eval/")}
if last_eval:
    print(f"last evaluation (step {last_eval['accuracy'][0]}): " + ", ".join(
        f"{name} {last_eval[name][1]:.4f}" for name, _ in panels))
if result.depth_curve is not None:
    print("depth curve:", result.depth_curve.summary())
    display(Image(filename=str(WORKDIR / "depth_curve.png")))
"""

RESTORE_MD = """\
## 6. Load the checkpoint

Everything below uses only what the run left on disk: the resolved `config.json` and the newest
orbax checkpoint, restored onto a mesh over all devices.
"""

RESTORE = """\
from trm_jax.data.format import read_metadata
from trm_jax.train import parallel
from trm_jax.train.checkpoint import Checkpointer

run_config = configs_lib.config_from_json(WORKDIR / loop.CONFIG_NAME)
run_data = loop.dataset_dir(run_config, WORKDIR)
model_cfg = configs_lib.model_config(run_config, read_metadata(run_data / "test"))
optim_cfg = configs_lib.optim_config(run_config)
mesh = parallel.make_mesh()
with Checkpointer(WORKDIR / loop.CHECKPOINT_DIR, max_to_keep=None, async_save=False) as checkpointer:
    saved_steps = checkpointer.all_steps()
    restored, extras = loop.restore_checkpoint(checkpointer, model_cfg, optim_cfg, mesh, saved_steps[-1])
print(f"checkpoints at steps {saved_steps}; restored step {int(restored.step)} "
      f"({sum(x.size for x in jax.tree_util.tree_leaves(restored.params)):,} parameters)")
"""

EVALUATE_MD = """\
## 7. Evaluate the restored model

The whole test split, with the EMA weights. The numbers equal the run's last evaluation.
(Shell: `trm-jax evaluate --workdir DIR`.)
"""

EVALUATE = """\
eval_fn = parallel.jit_eval_step(model_cfg, mesh, restored, use_ema=optim_cfg.ema)
eval_loader = loop.make_eval_loader(run_config, run_data)
restored_metrics = loop.run_evaluation(run_config, restored, eval_fn, eval_loader, step=int(restored.step))
for name in ("accuracy", "exact_accuracy", "lm_loss", "steps"):
    print(f"{name:>15}: {restored_metrics[name]:.4f}")
if last_eval.get("accuracy", (None,))[0] == int(restored.step):
    logged = last_eval["accuracy"][1]
    assert abs(restored_metrics["accuracy"] - logged) < 1e-3, (restored_metrics["accuracy"], logged)
    print(f"matches the accuracy logged during training at step {int(restored.step)} ({logged:.4f})")
"""

PUZZLES_MD = """\
## 8. Solved puzzles

Predictions of the restored model on test puzzles: givens in black, filled-in digits in blue,
wrong ones in red. Exactly solved puzzles are shown first.
"""

PUZZLES = """\
from trm_jax.data.loader import IGNORE_LABEL_ID

inputs, labels, preds = [], [], []
for batch in loop.make_eval_loader(run_config, run_data):
    predictions, _ = eval_fn(restored, batch)
    real = ~np.all(batch["labels"] == IGNORE_LABEL_ID, axis=1)  # drop padding rows
    inputs.append(batch["inputs"][real])
    labels.append(batch["labels"][real])
    preds.append(np.asarray(jax.device_get(predictions["preds"]))[real])
inputs, labels, preds = map(np.concatenate, (inputs, labels, preds))
solved = np.all(preds == labels, axis=1)
blanks = inputs == 1  # the blank token
blanks_right = np.sum((preds == labels) & blanks, axis=1) / np.maximum(blanks.sum(axis=1), 1)
print(f"solved exactly: {int(solved.sum())} of {len(solved)} test puzzles; "
      f"blank cells filled correctly: {np.sum((preds == labels) & blanks) / blanks.sum():.1%}")
for i in np.lexsort((-blanks_right, ~solved))[:3]:  # solved first, then the most blanks right
    display(render.render_sudoku(inputs[i], prediction=preds[i], target=labels[i], title=f"test puzzle {i}: "
                                 + ("solved" if solved[i] else f"{blanks_right[i]:.0%} of the blanks right")))
"""

PREDICT_MD = """\
## 9. Solve a new puzzle

A puzzle generated now, as hard as the training ones (not in the dataset), solved with the restored EMA
weights by running the recursion for `halt_max_steps` supervision steps. (Shell:
`trm-jax predict --workdir DIR --puzzle '<81 characters, digits and . for blanks>'`.)
"""

PREDICT = """\
import random

import jax.numpy as jnp

from trm_jax.data.generate_sudoku import generate_puzzle, generate_puzzle_with_blanks
from trm_jax.data.sudoku import is_valid_solution
from trm_jax.model.act import evaluate_to_halt

blanks = run_config.data.generate.blanks  # the difficulty the model was trained on (0: minimal puzzles)
rnd = random.Random(2025)
puzzle, solution, rating = generate_puzzle_with_blanks(rnd, blanks) if blanks else generate_puzzle(rnd)
print("puzzle:", "".join(str(d) if d else "." for d in puzzle), f"(backtracks needed: {rating})")
tokens = np.asarray(puzzle, np.int32) + 1  # dataset tokens: blank 1, digit d -> d + 1
batch = {"inputs": jnp.asarray(tokens[None]), "labels": jnp.asarray(np.asarray(solution, np.int32)[None] + 1),
         "puzzle_identifiers": jnp.zeros((1,), jnp.int32)}
variables = jax.device_get(restored.variables(use_ema=optim_cfg.ema))
_, outputs = jax.jit(lambda v, b: evaluate_to_halt(model_cfg, v, b))(variables, batch)
prediction = np.asarray(jnp.argmax(outputs["logits"], axis=-1))[0]
grid = np.clip(prediction - 1, 0, 9).reshape(9, 9)
print("valid solution:", bool(is_valid_solution(grid)),
      f"| model confidence (sigmoid of the halt logit): {float(jax.nn.sigmoid(outputs['q_halt_logits'][0])):.3f}")
display(render.render_sudoku(tokens, prediction=prediction, target=np.asarray(solution) + 1, title="a new puzzle"))
"""

OUTRO = """\
## Next

- Train longer (`config.optim.total_steps`) or bigger (`config.model.hidden_size`), or open a
  paper config: `sudoku_mlp`, `sudoku_att`, `maze`, `arc1`, `arc2` (load one with
  `configs_lib.load_config("sudoku_mlp")`; their datasets are built with `trm-jax data ...`,
  see the README).
- Everything here is in the run directory; `WORKDIR/curves.png` is the loop's own plot.
"""

CELLS: list[tuple[str, str, str]] = [  # (cell type, tag / id, source)
    ("markdown", "intro", INTRO),
    ("markdown", "install-md", INSTALL_MD),
    ("code", "install", INSTALL),
    ("code", "devices", DEVICES),
    ("markdown", "parameters-md", PARAMS_MD),
    ("code", "parameters", PARAMS),
    ("markdown", "dataset-md", DATASET_MD),
    ("code", "dataset", DATASET),
    ("markdown", "train-md", TRAIN_MD),
    ("code", "train", TRAIN),
    ("markdown", "curves-md", CURVES_MD),
    ("code", "curves", CURVES),
    ("markdown", "restore-md", RESTORE_MD),
    ("code", "restore", RESTORE),
    ("markdown", "evaluate-md", EVALUATE_MD),
    ("code", "evaluate", EVALUATE),
    ("markdown", "puzzles-md", PUZZLES_MD),
    ("code", "puzzles", PUZZLES),
    ("markdown", "predict-md", PREDICT_MD),
    ("code", "predict", PREDICT),
    ("markdown", "outro", OUTRO),
]


def build_notebook() -> nbformat.NotebookNode:
    """The notebook, without outputs; code cells tagged with their id."""
    cells = []
    for kind, cell_id, source in CELLS:
        source = source.rstrip("\n")
        if kind == "code":
            cell = nbformat.v4.new_code_cell(source, id=cell_id, metadata={"tags": [cell_id]})
        else:
            cell = nbformat.v4.new_markdown_cell(source, id=cell_id)
        cells.append(cell)
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata = {
        "accelerator": "GPU",  # Colab opens it on a GPU runtime; any runtime works
        "colab": {"provenance": [], "name": "trm_jax_colab.ipynb"},
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    nbformat.validate(nb)
    return nb


def notebook_text() -> str:
    return nbformat.writes(build_notebook()) + "\n"


def main() -> int:
    text = notebook_text()
    with atomic_write(NOTEBOOK) as f:
        f.write(text)
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
