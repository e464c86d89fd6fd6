"""What a checkpoint of a paper config's train state costs on this machine: the checksums it
records (trm_jax.train.checksum), a synchronous save, and a restore that verifies them.

    python -m benchmarks.checkpoint_cost --config arc          # ARC: a 960,961-row puzzle table

The state is the train state the run checkpoints (parameters, optimiser moments, EMA, puzzle
table, ACT carry at the paper's batch of 768, RNG), created on this machine's first device and
filled with random values (as incompressible as trained weights).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from benchmarks import common  # noqa: E402

GIB = 2**30


@jax.jit
def randomized(state: Any) -> Any:
    """Every floating-point array of ``state`` filled with normal draws (the rest unchanged)."""
    leaves, tree = jax.tree_util.tree_flatten(state)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    return jax.tree_util.tree_unflatten(
        tree,
        [
            jax.random.normal(key, leaf.shape, leaf.dtype)
            if jax.numpy.issubdtype(leaf.dtype, jax.numpy.floating)
            else leaf
            for key, leaf in zip(keys, leaves)
        ],
    )


def seconds(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from trm_jax.train import checkpoint, parallel  # noqa: PLC0415
    from trm_jax.train.checksum import checksums  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="arc", choices=sorted(common.NAMED_CONFIGS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out-dir", default=common.RESULTS_DIR)
    args = parser.parse_args(argv)
    bench = common.get_config(args.config)
    model_config = bench.model_config(bench.default_batch_size, "bfloat16")
    mesh = parallel.make_mesh(jax.devices()[:1])
    state = parallel.create_sharded_train_state(model_config, bench.optim, jax.random.key(0), mesh)
    state = randomized(state)  # a trained state's bytes: zeros would compress to nothing
    jax.block_until_ready(state)
    stored = jax.tree.map(checkpoint._stored_leaf, state)
    flat = {"/".join(k): v for k, v in checkpoint.ocp.tree.to_flat_dict(stored).items() if v is not None}
    state_bytes = sum(v.size * v.dtype.itemsize for v in flat.values())
    checksums(flat)  # compile
    checksum_s = seconds(lambda: checksums(flat), args.repeats)
    save_s, restore_s = [], []
    with tempfile.TemporaryDirectory() as directory:
        for repeat in range(args.repeats):
            with checkpoint.Checkpointer(directory, max_to_keep=1, async_save=False) as ckpt:
                save_s += seconds(lambda: ckpt.save(repeat + 1, state, {"step": repeat + 1}), 1)
                restore_s += seconds(lambda: jax.block_until_ready(ckpt.restore(repeat + 1, target=state)[0]), 1)
    median = statistics.median
    report = {
        "config": args.config,
        "state_bytes": state_bytes,
        "arrays": len(flat),
        "checksum_s": checksum_s,
        "save_s": save_s,
        "restore_s": restore_s,
        "checksum_gb_per_s": state_bytes / median(checksum_s) / 1e9,
        "device": jax.devices()[0].device_kind,
        **common.run_metadata(sys.argv[1:] if argv is None else argv),
    }
    rows = [
        ["checksums of every array", f"{median(checksum_s):.2f}"],
        ["synchronous save (checksums included)", f"{median(save_s):.2f}"],
        ["restore, checksums verified", f"{median(restore_s):.2f}"],
    ]
    lines = [
        f"## Checkpoint cost: `{args.config}` train state, {state_bytes / GIB:.2f} GiB in {len(flat)} arrays, "
        f"{report['device']}",
        "",
        common.markdown_table(["what", f"median of {args.repeats} (s)"], rows),
        f"Checksums at {report['checksum_gb_per_s']:.2f} GB/s.",
        "",
        *common.provenance_lines(report),
    ]
    common.write_report(
        os.path.join(args.out_dir, f"checkpoint_cost_{args.config}_{jax.default_backend()}"),
        report,
        "\n".join(lines) + "\n",
        "checkpoint_cost",
    )
    return report


if __name__ == "__main__":
    main()
