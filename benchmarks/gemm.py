"""The mlp_t step's matrix products one by one: XLA's GEMM against PyTorch's, same device.

    python benchmarks/gemm.py                           # sudoku_mlp at batch 8, float32
    python benchmarks/gemm.py --batch-size 32

Our step and the official one do the same matrix products; which library runs them is a large
part of the ratio between the two steps (``step_time.py``). For every product of one mlp_t
network block (forward, input gradients, weight gradients) this times ``a @ b`` on
contiguous row-major operands as a jitted JAX function and as a PyTorch call: the fastest
burst of ``--calls`` calls over ``--reps`` bursts, interleaved. It then weighs the products by
how often one train step runs them (T(n+1) forward calls per layer; the backward of the n+1
calls of the last cycle) into the *matmul-only step time* each library would take at these
isolated speeds. The ceiling shape of ``jax_step.MatmulCeiling`` comes first.

Writes ``<out-dir>/gemm_<config>_<device>_<dtype>_b<batch>[_<name>].{json,md}``.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable, Sequence  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.jax_step import MatmulCeiling, jax_device, matmul_precision  # noqa: E402
from trm_jax.config import TRMConfig  # noqa: E402
from trm_jax.model.layers import swiglu_inner_size  # noqa: E402

SCHEMA = "trm-jax/gemm/v1"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="sudoku_mlp", help="a named config with mlp_t")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument("--calls", type=int, default=10, help="calls per timed burst")
    parser.add_argument("--reps", type=int, default=20, help="bursts per product and library")
    parser.add_argument("--name", default=None, help="suffix of the output name")
    parser.add_argument("--out-dir", default=common.RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.calls < 1 or args.reps < 1:
        parser.error("--batch-size, --calls and --reps must be >= 1")
    return args


def mlp_t_products(config: TRMConfig, batch_size: int) -> list[dict[str, Any]]:
    """(name, m, k, n, calls per train step) of every matrix product of the mlp_t network.

    Layout as ours runs it: token mixing on [L, B*D] with the weights on the left, channel
    mixing on [B*L, D]. A gradient product's shape is that of the product it differentiates,
    transposed as its operands are; each forward product has one for its input and one for
    its weight.
    """
    if not config.mlp_t:
        raise ValueError(f"config {config!r}: expected an mlp_t model (mlp_t=True)")
    L, D, BL, BD = config.total_len, config.hidden_size, batch_size * config.total_len, \
        batch_size * config.hidden_size
    it, ic = swiglu_inner_size(L, config.expansion), swiglu_inner_size(D, config.expansion)
    forward = [("token gate_up", 2 * it, L, BD), ("token down", L, it, BD),
               ("channel gate_up", BL, D, 2 * ic), ("channel down", BL, ic, D)]
    calls_forward = config.H_cycles * (config.L_cycles + 1) * config.L_layers
    calls_backward = (config.L_cycles + 1) * config.L_layers
    products = [{"name": f"{name} forward", "m": m, "k": k, "n": n, "calls": calls_forward}
                for name, m, k, n in forward]
    for name, m, k, n in forward:
        if name.startswith("token"):  # out[m, n] = W^T[m, k] @ x[k, n]
            products.append({"name": f"{name} d_input", "m": k, "k": m, "n": n,
                             "calls": calls_backward})
            products.append({"name": f"{name} d_weight", "m": m, "k": n, "n": k,
                             "calls": calls_backward})
        else:  # out[m, n] = x[m, k] @ W[k, n]
            products.append({"name": f"{name} d_input", "m": m, "k": n, "n": k,
                             "calls": calls_backward})
            products.append({"name": f"{name} d_weight", "m": k, "k": m, "n": n,
                             "calls": calls_backward})
    return products


def best_rate(call: Callable[[], Any], sync: Callable[[Any], None], flops: float, calls: int,
              reps: int) -> float:
    """FLOP/s of the fastest of ``reps`` bursts of ``calls`` calls (after one warm-up burst)."""
    best = 0.0
    for rep in range(reps + 1):
        start = time.perf_counter()
        for _ in range(calls):
            out = call()
        sync(out)
        if rep:
            best = max(best, flops * calls / (time.perf_counter() - start))
    return best


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    device = jax_device(args.device)
    config = common.get_config(args.config).model_config(args.batch_size, args.dtype)
    m, k, n = MatmulCeiling.SHAPE
    shapes = [{"name": "ceiling shape", "m": m, "k": k, "n": n, "calls": 0}]
    shapes += mlp_t_products(config, args.batch_size)
    try:
        import torch  # noqa: PLC0415 - optional
    except ImportError:
        torch = None
        print("[gemm] torch is not installed: timing XLA only", file=sys.stderr)
    torch_device = "cuda" if device.platform == "gpu" else "cpu"
    rng = np.random.default_rng(0)
    matmul = jax.jit(jnp.matmul)
    rows = []
    with jax.default_matmul_precision(matmul_precision(args.dtype)):
        for shape in shapes:
            a = rng.standard_normal((shape["m"], shape["k"]), np.float32)
            b = rng.standard_normal((shape["k"], shape["n"]), np.float32)
            flops = 2.0 * shape["m"] * shape["k"] * shape["n"]
            ja = jax.device_put(jnp.asarray(a, args.dtype), device)
            jb = jax.device_put(jnp.asarray(b, args.dtype), device)
            row = dict(shape, flops=flops,
                       xla=best_rate(lambda: matmul(ja, jb), jax.block_until_ready, flops,
                                     args.calls, args.reps), torch=None)
            if torch is not None:
                tdtype = getattr(torch, args.dtype)
                ta = torch.from_numpy(a).to(torch_device, tdtype)
                tb = torch.from_numpy(b).to(torch_device, tdtype)
                sync = (lambda _: torch.cuda.synchronize()) if torch_device == "cuda" else (lambda _: None)
                row["torch"] = best_rate(lambda: ta @ tb, sync, flops, args.calls, args.reps)
            rows.append(row)
            print(f"[gemm] {shape['name']}: {shape['m']}x{shape['k']}x{shape['n']}", file=sys.stderr)
    step = [r for r in rows if r["calls"]]
    totals = {"xla": sum(r["flops"] * r["calls"] / r["xla"] for r in step)}
    if torch is not None:
        totals["torch"] = sum(r["flops"] * r["calls"] / r["torch"] for r in step)
    return {
        "schema": SCHEMA,
        "meta": common.run_metadata(argv),
        "device": {"jax_platform": device.platform, "kind": device.device_kind},
        "config": args.config, "batch_size": args.batch_size, "dtype": args.dtype,
        "calls_per_burst": args.calls, "bursts": args.reps,
        "rows": rows,
        "matmul_only_step_s": totals,
        "matmul_flops_per_step": sum(r["flops"] * r["calls"] for r in step),
    }


def to_markdown(result: dict[str, Any]) -> str:
    """One row per product, the weighted totals, provenance."""
    meta = result["meta"]
    rows = [[r["name"], f"{r['m']}x{r['k']}x{r['n']}", r["calls"] or "—", r["xla"] / 1e9,
             None if r["torch"] is None else r["torch"] / 1e9,
             None if r["torch"] is None else r["torch"] / r["xla"]] for r in result["rows"]]
    totals = result["matmul_only_step_s"]
    total_text = f"XLA {totals['xla'] * 1e3:.0f} ms"
    if "torch" in totals:
        total_text += (f", PyTorch {totals['torch'] * 1e3:.0f} ms "
                       f"(XLA / PyTorch {totals['xla'] / totals['torch']:.2f})")
    lines = [
        f"## the mlp_t step's matrix products, `{result['config']}` batch {result['batch_size']}, "
        f"{result['dtype']}, {result['device']['kind']}",
        "",
        common.markdown_table(["product", "m x k x n", "calls per step", "XLA GFLOP/s",
                               "PyTorch GFLOP/s", "PyTorch / XLA"], rows),
        f"- each: fastest of {result['bursts']} bursts of {result['calls_per_burst']} calls of "
        f"a @ b, contiguous row-major operands",
        f"- matmul-only step time at these speeds ({result['matmul_flops_per_step'] / 1e9:.1f} "
        f"GFLOP): {total_text}",
        *common.provenance_lines(meta),
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """CLI entry point; returns the result document (also written as JSON + markdown)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    result = run(args, argv)
    stem = (f"gemm_{args.config}_{result['device']['jax_platform']}_{args.dtype}_b{args.batch_size}"
            + (f"_{args.name}" if args.name else ""))
    common.write_report(os.path.join(args.out_dir, stem), result, to_markdown(result), "gemm")
    return result


if __name__ == "__main__":
    try:
        main()
    except (KeyError, RuntimeError, ValueError) as err:
        print(f"[gemm] error: {err}", file=sys.stderr)
        sys.exit(2)
