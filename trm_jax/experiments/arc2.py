r"""ARC-AGI-2 (training2 + evaluation2 + concept puzzles, 1000 augmentations each), attention TRM.

Data (the Kaggle "combined" JSON files under data/arc-agi/)::

    trm-jax data arc data/arc2concept-aug-1000 --preset arc2 --input-prefix data/arc-agi/arc-agi

Train::

    trm-jax train --config arc2 --workdir runs/arc2

Expected result (reported in the paper, not measured by this project): 7.8% pass@2.
Hyper-parameters as ARC-AGI-1 (``arc1``); only the data differ.
"""

from pathlib import Path

from trm_jax.configs import load_config_file


def get_config():
    c = load_config_file(str(Path(__file__).with_name("arc1.py")))
    c.data.dataset_dir = "data/arc2concept-aug-1000"
    return c
