"""Where a step's efficiency goes, by kind of cycle: the gradient-free cycles against the differentiated one.

    python benchmarks/cycle_split.py                                   # sudoku_mlp, chunks of 4 and 8 rows
    python benchmarks/cycle_split.py --configs sudoku_mlp,sudoku_att --rows 8,32
    python benchmarks/cycle_split.py --set saved_activations=all       # a model option's effect

For each chunk of rows, a train step runs T-1 *gradient-free* cycles of n+1 network calls, one
*differentiated* cycle (the forward of its n+1 calls and their backward pass), then the heads,
the loss and the update. This times the two kinds of cycle on their own, as
``trm_jax.model.recursion.deep_recursion`` runs them (with the config's ``remat`` and
``saved_activations``): a jitted ``latent_recursion`` of the network, and a jitted gradient,
with respect to the parameters and the input embedding, of a scalar of the differentiated
cycle's output. Carries and inputs are random, in the recursion layout. Each gets its analytic
matmul FLOPs (``(n+1)`` network calls, and three times that with the backward pass:
``common.network_flops_per_call``) and its fraction of the matmul ceiling
(``jax_step.MatmulCeiling``) measured immediately before it, in interleaved rounds as in
``efficiency.py``. A step at ``--rows`` rows per chunk (``optim.microbatches`` = batch / rows)
spends ``(T-1) x free + differentiated`` of its recursion time per chunk; the difference
between the two fractions says which kind of work a change should target, which the profiler
cannot say reliably here (XLA:CPU runs independent operations at the same time, so per-op
durations overlap).

With ``--weight-gradients`` the differentiated cycle is also timed differentiated with respect
to the input embedding alone (no weight gradients), and to the input and one group of the
reasoning module's weights at a time (``mlp``: the channel SwiGLU, ``mlp_t``: the token
mixing, ``self_attn``: the attention projections). The difference to the input-only time is
what that group's weight gradients cost; their analytic FLOPs equal the forward FLOPs of the
products they belong to, over the n+1 calls. The report gives each group's GFLOP/s and
fraction of the ceiling, and the input-gradient pass's.

Writes ``<out-dir>/cycle_split_<name>.{json,md}``.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import functools  # noqa: E402
import statistics  # noqa: E402
from typing import Any, Callable, Sequence  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import traverse_util  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.jax_step import MatmulCeiling, device_and_dtype, precision_for  # noqa: E402
from trm_jax.config import TRMConfig  # noqa: E402
from trm_jax.model.network import TRMNet, init_variables  # noqa: E402
from trm_jax.model.recursion import deep_recursion, latent_recursion  # noqa: E402

SCHEMA = "trm-jax/cycle_split/v1"
PARTS = ("gradient-free cycle", "differentiated cycle")
INPUT_ONLY = "differentiated cycle, input gradient only"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="sudoku_mlp",
                        help=f"comma-separated named configs ({', '.join(common.NAMED_CONFIGS)})")
    parser.add_argument("--rows", default="4,8", help="comma-separated rows per chunk")
    parser.add_argument("--rounds", type=int, default=5, help="timed calls of each (interleaved)")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="forward dtype; default bfloat16 on GPU, float32 elsewhere")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a model field of every config (repeatable)")
    parser.add_argument("--weight-gradients", action="store_true",
                        help="also time the differentiated cycle without weight gradients and "
                             "with those of one group of weights at a time")
    parser.add_argument("--name", default=None, help="output name (default: from the device)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=common.RESULTS_DIR)
    args = parser.parse_args(argv)
    args.configs = common.parse_config_names(parser, args.configs)
    args.rows = common.parse_positive_ints(parser, "--rows", args.rows)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    args.overrides = common.parse_model_overrides(parser, args.set)
    return args


def weight_groups(flat_params: dict[tuple[str, ...], Any]) -> dict[str, list[tuple[str, ...]]]:
    """The reasoning module's weights by the sub-layer of a block they belong to
    (``mlp``, ``mlp_t``, ``self_attn``): group name -> parameter paths, every layer's."""
    groups: dict[str, list[tuple[str, ...]]] = {}
    for path in flat_params:
        if path[0] == "L_level":
            groups.setdefault(path[2], []).append(path)
    return groups


def weight_gradient_flops(config: TRMConfig, flat_params: dict[tuple[str, ...], Any],
                          paths: Sequence[tuple[str, ...]]) -> float:
    """Analytic FLOPs of the weight gradients of ``paths`` over one cycle's n+1 calls: those of
    the forward products the weights take part in, 2 x size x the vectors each multiplies
    (a token-mixing weight one per [row, channel], the others one per [row, position])."""
    rows = config.batch_size
    total = 0.0
    for path in paths:
        vectors = rows * (config.hidden_size if path[2] == "mlp_t" else config.total_len)
        total += 2.0 * flat_params[path].size * vectors
    return (config.L_cycles + 1) * total


def part_name(group: str) -> str:
    """The part that differentiates the cycle w.r.t. the input and the ``group`` weights."""
    return f"differentiated cycle, input + {group} weight gradients"


def cycle_functions(config: TRMConfig, seed: int, weight_gradients: bool = False
                    ) -> dict[str, dict[str, Any]]:
    """The kinds of cycle by part name: ``fn``, a compiled, argument-free call on
    device-resident inputs; ``flops``, its analytic matmul FLOPs; ``group``, the weight group
    it differentiates besides the input, or None. ``weight_gradients`` adds the differentiated
    cycle without weight gradients and with each group of weights' alone
    (:func:`weight_groups`)."""
    model = TRMNet(config)
    params = init_variables(config, jax.random.key(seed))["params"]

    def net_with(p: Any) -> Callable[[jax.Array, jax.Array], jax.Array]:
        return lambda h, inj: model.apply({"params": p}, h, inj, method=TRMNet.reason)

    rows, length, width = config.batch_size, config.total_len, config.hidden_size
    shape = (length, rows, width) if config.mlp_t else (rows, length, width)
    keys = jax.random.split(jax.random.key(seed + 1), 4)
    dtype = jnp.dtype(config.forward_dtype)
    z_H, z_L, x, weight = (jax.random.normal(k, shape, jnp.float32).astype(dtype) for k in keys)

    def free(p, z_H, z_L, x):
        return latent_recursion(net_with(p), z_H, z_L, x, config.L_cycles)

    def differentiated(p_grad, p_rest, z_H, z_L, x, weight):
        """Gradients w.r.t. ``p_grad`` (a flat dict of parameters) and the input embedding;
        ``p_rest`` holds the parameters that get none."""
        def scalar(p_grad, x):
            p = traverse_util.unflatten_dict({**p_rest, **p_grad})
            out, _, _ = deep_recursion(net_with(p), z_H, z_L, x, H_cycles=1,
                                       L_cycles=config.L_cycles, remat=config.remat,
                                       saved_activations=config.saved_activations)
            return jnp.sum(out.astype(jnp.float32) * weight.astype(jnp.float32))
        return jax.grad(scalar, argnums=(0, 1))(p_grad, x)

    flat = traverse_util.flatten_dict(params)
    forward = (config.L_cycles + 1) * common.network_flops_per_call(config, rows)
    # part -> (the parameters it differentiates, its FLOPs, its weight group)
    selections = {PARTS[1]: (list(flat), 3 * forward, None)}
    if weight_gradients:
        groups = weight_groups(flat)
        every_weight = [path for paths in groups.values() for path in paths]
        input_only = 3 * forward - weight_gradient_flops(config, flat, every_weight)
        selections[INPUT_ONLY] = ([], input_only, None)
        for group, paths in groups.items():
            selections[part_name(group)] = (
                paths, input_only + weight_gradient_flops(config, flat, paths), group)

    with jax.default_matmul_precision(precision_for(config)):
        free_c = jax.jit(free).lower(params, z_H, z_L, x).compile()
        parts = {PARTS[0]: {"fn": lambda: free_c(params, z_H, z_L, x), "flops": forward,
                            "group": None}}
        for part, (paths, flops, group) in selections.items():
            p_grad = {path: flat[path] for path in paths}
            p_rest = {path: v for path, v in flat.items() if path not in p_grad}
            compiled = jax.jit(differentiated).lower(p_grad, p_rest, z_H, z_L, x, weight).compile()
            parts[part] = {"fn": functools.partial(compiled, p_grad, p_rest, z_H, z_L, x, weight),
                           "flops": flops, "group": group}
    return parts


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    """Compiles every (config, rows) pair of cycles, times them in interleaved rounds."""
    device, dtype = device_and_dtype(args)
    ceiling = MatmulCeiling(device, dtype, args.seed)
    cases = []
    with jax.default_device(device):
        for name in args.configs:
            bench = common.get_config(name)
            for rows in args.rows:
                config = bench.model_config(rows, dtype, **args.overrides)
                for part, kind in cycle_functions(config, args.seed,
                                                  args.weight_gradients).items():
                    jax.block_until_ready(kind["fn"]())  # first call: allocation, caches
                    cases.append({"config": name, "rows": rows, "part": part, **kind,
                                  "H_cycles": config.H_cycles, "times": [], "ceilings": []})
                print(f"[cycle_split] compiled {name} rows {rows}", file=sys.stderr)
        for r in range(args.rounds):
            for case in cases:
                case["ceilings"].append(ceiling.measure())
                case["times"] += common.time_calls(lambda i: case["fn"](), jax.block_until_ready, 1)
            print(f"[cycle_split] round {r + 1}/{args.rounds} done", file=sys.stderr)
    rows = [summarize_case(case) for case in cases]
    return {
        "schema": SCHEMA,
        "meta": common.run_metadata(argv),
        "device": {"jax_platform": device.platform, "kind": device.device_kind},
        "dtype": dtype,
        "overrides": args.overrides,
        "ceiling": ceiling.describe(),
        "rounds": args.rounds,
        "rows": rows,
        "chunks": chunk_summaries(rows),
        "weight_gradients": weight_gradient_summaries(rows),
    }


def summarize_case(case: dict[str, Any]) -> dict[str, Any]:
    """Median time, GFLOP/s and fraction of the ceiling (median of per-round ratios)."""
    return {
        "config": case["config"], "rows": case["rows"], "part": case["part"],
        "group": case["group"], "H_cycles": case["H_cycles"], "flops": case["flops"],
        **common.ceiling_statistics(case["flops"], case["times"], case["ceilings"]),
    }


def chunk_summaries(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (config, rows): one chunk's recursion as a step runs it, ``(T-1)`` gradient-free
    cycles and one differentiated, from the medians: time, the differentiated cycle's share
    of it, and the FLOP-weighted fraction of the ceiling."""
    out = []
    for free in (r for r in rows if r["part"] == PARTS[0]):
        diff = next(r for r in rows if r["part"] == PARTS[1]
                    and (r["config"], r["rows"]) == (free["config"], free["rows"]))
        t_free, t_diff = free["times"]["median_s"], diff["times"]["median_s"]
        cycles = free["H_cycles"] - 1
        total_s = cycles * t_free + t_diff
        flops = cycles * free["flops"] + diff["flops"]
        ceiling = statistics.median([free["ceiling_gflops_per_s"], diff["ceiling_gflops_per_s"]])
        out.append({"config": free["config"], "rows": free["rows"], "seconds": total_s,
                    "differentiated_share": t_diff / total_s,
                    "fraction_of_ceiling": flops / total_s / (ceiling * 1e9)})
    return out


def weight_gradient_summaries(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (config, rows, weight group): the group's weight gradients as the difference of the
    medians of the cycle differentiated with them and without any, their analytic FLOPs, and
    GFLOP/s and fraction of the two parts' median ceiling at that difference."""
    out = []
    for base in (r for r in rows if r["part"] == INPUT_ONLY):
        for row in rows:
            if row["group"] is None or (row["config"], row["rows"]) != (base["config"],
                                                                        base["rows"]):
                continue
            seconds = row["times"]["median_s"] - base["times"]["median_s"]
            flops = row["flops"] - base["flops"]
            ceiling = statistics.median([row["ceiling_gflops_per_s"], base["ceiling_gflops_per_s"]])
            rate = flops / seconds / 1e9 if seconds > 0 else None  # None: lost in the noise
            out.append({"config": row["config"], "rows": row["rows"],
                        "group": row["group"],
                        "seconds": seconds, "flops": flops, "gflops_per_s": rate,
                        "fraction_of_ceiling": None if rate is None else rate / ceiling})
    return out


def to_markdown(result: dict[str, Any]) -> str:
    """The report: one row per (config, rows, part), a line per chunk, provenance."""
    table = [[r["config"], r["rows"], r["part"], r["times"]["median_s"] * 1e3, r["flops"] / 1e9,
              r["gflops_per_s"], r["ceiling_gflops_per_s"], common.format_fraction_of_ceiling(r)]
             for r in result["rows"]]
    lines = [
        f"## cycle split, {result['dtype']}, {result['device']['kind']}"
        + (f", overrides {result['overrides']}" if result["overrides"] else ""),
        "",
        common.markdown_table(["config", "rows", "part", "median ms", "GFLOP", "GFLOP/s",
                               "ceiling GFLOP/s", "of ceiling: median (min-max)"], table),
        f"- work: analytic matmul FLOPs, (n+1) network calls per cycle, 3x with the backward "
        f"pass; ceiling: {result['ceiling']['text']}, measured before every timed call; "
        f"{result['rounds']} interleaved rounds",
    ]
    for c in result["chunks"]:
        lines.append(f"- {c['config']}, {c['rows']} rows: one chunk's recursion ((T-1) gradient-free "
                     f"+ 1 differentiated cycle) {1e3 * c['seconds']:.0f} ms, "
                     f"{100 * c['differentiated_share']:.0f}% of it in the differentiated cycle; "
                     f"{100 * c['fraction_of_ceiling']:.1f}% of the ceiling together")
    for w in result["weight_gradients"]:
        rate = ("no slower than without them" if w["gflops_per_s"] is None else
                f"{w['gflops_per_s']:.0f} GFLOP/s, {100 * w['fraction_of_ceiling']:.0f}% of the "
                f"ceiling")
        lines.append(f"- {w['config']}, {w['rows']} rows: the {w['group']} weight gradients add "
                     f"{1e3 * w['seconds']:.1f} ms for {w['flops'] / 1e9:.3g} GFLOP to the "
                     f"input-gradient-only cycle: {rate}")
    lines += [*common.provenance_lines(result["meta"]), ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """CLI entry point; returns the result document (also written as JSON + markdown)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    result = run(args, argv)
    name = common.report_name(args, result)
    os.makedirs(args.out_dir, exist_ok=True)
    common.write_report(os.path.join(args.out_dir, f"cycle_split_{name}"), result,
                        to_markdown(result), "cycle_split")
    return result


if __name__ == "__main__":
    main()
