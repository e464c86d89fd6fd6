"""Our Sudoku-MLP train step against another JAX port's, same device, interleaved rounds.

    python benchmarks/peers.py --nnx-port-dir /path/to/ecntu-trm-jax       # batch 8 and 32
    python benchmarks/peers.py --nnx-port-dir DIR --batch-sizes 8 --rounds 3

The peer is the Flax NNX port of TRM at github.com/ecntu/trm-jax (mlp_t token mixing, no
puzzle-embedding prefix: 81 positions where ours has 16 + 81). It is *imported* from a checkout
the caller gives (``--nnx-port-dir`` or ``$TRM_NNX_PORT_DIR``), never copied here. Its
``main.py`` imports clu, simple_parsing and datasets at the top for its command line, logging
and data download; where they are not installed, empty stand-ins are registered for the
import (nothing the train step uses comes from them).

What is timed: its jitted ``train_step`` (``nnx.jit``; one call runs ``N_supervision``
supervision steps, each a forward of T cycles, the backward of the last, and an optimiser
update, then the EMA), with the model and optimiser built as its ``__main__`` builds them
(``model_factory`` in float32, global-norm clipping + AdamW with its weight-decay mask). One
of its supervision steps does the work of one of our ACT train steps, so its time per call
is divided by ``N_supervision`` (``--supervision-steps``, 4 by default; its default 16 only
makes a call longer). Ours: ``sudoku_mlp`` on the production path (``jax_step.JaxTrainStep``).

The ports do different amounts of work (sequence 81 vs 97, token-mixing inner width 256 vs
512), so the comparison is per analytic matmul FLOP (the same count as
``common.model_flops_per_step``): GFLOP/s, and the fraction of a matmul ceiling measured
before every timed call (``jax_step.MatmulCeiling``). "Peer time per FLOP / ours" is the
median over rounds of the paired ratio; above 1 means the peer spends more time per FLOP.

Writes ``<out-dir>/peers_<name>.{json,md}``.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import importlib.util  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from typing import Any, Sequence  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.jax_step import JaxTrainStep, MatmulCeiling, device_and_dtype  # noqa: E402
from trm_jax.model.layers import swiglu_inner_size  # noqa: E402

SCHEMA = "trm-jax/peers/v1"
NNX_PORT_ENV = "TRM_NNX_PORT_DIR"
NNX_PORT_URL = "https://github.com/ecntu/trm-jax"
# Modules the port's main.py imports only for its command line, logging and data download.
_COMMAND_LINE_ONLY = {
    "clu": ("metric_writers", "periodic_actions"),
    "simple_parsing": (),
    "datasets": (),
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nnx-port-dir", default=None,
                        help=f"checkout of {NNX_PORT_URL} (or ${NNX_PORT_ENV})")
    parser.add_argument("--batch-sizes", default="8,32")
    parser.add_argument("--rounds", type=int, default=5, help="timed calls of each (interleaved)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls of each after compiling")
    parser.add_argument("--supervision-steps", type=int, default=4,
                        help="the port's N_supervision: supervision steps per timed call")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=None, help="output name (default: from the device)")
    parser.add_argument("--out-dir", default=common.RESULTS_DIR)
    args = parser.parse_args(argv)
    args.dtype = "float32"  # the port computes in float32 except on TPU with half_precision
    args.batch_sizes = common.parse_positive_ints(parser, "--batch-sizes", args.batch_sizes)
    if args.rounds < 1 or args.warmup < 0 or args.supervision_steps < 1:
        parser.error("--rounds and --supervision-steps must be >= 1, --warmup >= 0")
    args.nnx_port_dir = args.nnx_port_dir or os.environ.get(NNX_PORT_ENV)
    if not args.nnx_port_dir:
        parser.error(f"give the port's checkout: --nnx-port-dir DIR or ${NNX_PORT_ENV} "
                     f"(git clone {NNX_PORT_URL})")
    return args


def load_nnx_port(directory: str) -> types.ModuleType:
    """The port's ``main.py`` as a module (its ``utils.py`` importable beside it).

    Raises FileNotFoundError naming the directory when it is not a checkout of the port.
    """
    path = os.path.join(directory, "main.py")
    if not (os.path.isfile(path) and os.path.isfile(os.path.join(directory, "utils.py"))):
        raise FileNotFoundError(f"--nnx-port-dir {directory!r}: expected main.py and utils.py "
                                f"of a checkout of {NNX_PORT_URL}")
    added = [name for name in _COMMAND_LINE_ONLY if importlib.util.find_spec(name) is None]
    for name in added:
        stand_in = types.ModuleType(name)
        stand_in.__dict__.update({"Dataset": object, "load_dataset": None, "parse": None})
        for sub in _COMMAND_LINE_ONLY[name]:
            setattr(stand_in, sub, types.ModuleType(f"{name}.{sub}"))
        sys.modules[name] = stand_in
    had_utils = "utils" in sys.modules
    sys.path.insert(0, os.path.abspath(directory))
    try:
        spec = importlib.util.spec_from_file_location("trm_nnx_port_main", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    finally:
        # The port keeps its references; the process keeps no stand-ins and no top-level
        # ``utils`` of the port's that could shadow another later.
        sys.path.pop(0)
        for name in added + ([] if had_utils else ["utils"]):
            sys.modules.pop(name, None)
    for attr in ("Config", "model_factory", "train_step"):
        if not hasattr(module, attr):
            raise AttributeError(f"{path}: has no {attr!r}; this harness was written against "
                                 f"{NNX_PORT_URL} at 462a99c")
    return module


def nnx_port_flops_per_supervision_step(cfg: Any, batch_size: int) -> float:
    """Analytic matmul FLOPs of one supervision step of the port (2 per multiply-add).

    As ``common.model_flops_per_step``: T(n+1) network calls forward, 2x the n+1 calls of the
    differentiated cycle for the backward, the output and halting heads three times.
    """
    B, L, D = batch_size, cfg.seq_len, cfg.h_dim

    def swiglu_flops(rows: int, width: int) -> float:
        inner = swiglu_inner_size(width, cfg.mlp_factor)
        return 2.0 * rows * (width * 2 * inner + inner * width)

    net = cfg.n_layers * (swiglu_flops(B * D, L) + swiglu_flops(B * L, D))
    calls = cfg.T * (cfg.n + 1) + 2 * (cfg.n + 1)
    heads = 2.0 * B * L * D * cfg.vocab_size + 2.0 * B * D
    return net * calls + 3 * heads


class NnxPortStep:
    """The port's jitted train step with its model, EMA model and optimiser."""

    def __init__(self, port: types.ModuleType, batch_size: int, supervision_steps: int,
                 device: jax.Device, seed: int) -> None:
        import jax.numpy as jnp
        import optax
        from flax import nnx

        self.cfg = dataclasses.replace(port.Config(), batch_size=batch_size,
                                       N_supervision=supervision_steps, seed=seed)
        self.supervision_steps = supervision_steps
        self.device = device
        self._train_step = port.train_step
        with jax.default_device(device):
            self.rngs = nnx.Rngs(seed)
            self.model, decay_mask = port.model_factory(self.cfg, jnp.float32, jnp.float32,
                                                        self.rngs)
            schedule = optax.warmup_constant_schedule(0.0, self.cfg.lr, self.cfg.lr_warmup_steps)
            tx = optax.chain(optax.clip_by_global_norm(1.0),
                             optax.adamw(schedule, b1=0.9, b2=0.95, eps=1e-8,
                                         weight_decay=self.cfg.weight_decay, mask=decay_mask))
            self.opt = nnx.Optimizer(self.model, tx, wrt=nnx.Param)
            self.ema_model = nnx.clone(self.model)

    def batches(self, count: int, seed: int) -> list[dict[str, jax.Array]]:
        """Random Sudoku-shaped batches on the device: inputs 0-9 (0 the blank), labels 1-9."""
        rng = np.random.default_rng(seed)
        shape = (self.cfg.batch_size, self.cfg.seq_len)
        return [jax.device_put({"inputs": rng.integers(0, self.cfg.vocab_size, shape, np.int32),
                                "labels": rng.integers(1, self.cfg.vocab_size, shape, np.int32)},
                               self.device) for _ in range(count)]

    def __call__(self, batch: dict[str, jax.Array]) -> Any:
        self.model, self.opt, self.ema_model, metrics = self._train_step(
            self.model, self.ema_model, self.opt, batch, self.cfg, self.rngs)
        return metrics

    @staticmethod
    def sync(result: Any) -> None:
        jax.block_until_ready(result)


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    """Builds both steps per batch size, times them in interleaved rounds, returns the report."""
    device, dtype = device_and_dtype(args)
    port = load_nnx_port(args.nnx_port_dir)
    ceiling = MatmulCeiling(device, dtype, args.seed)
    bench = common.get_config("sudoku_mlp")
    cases = []
    for batch_size in args.batch_sizes:
        config = bench.model_config(batch_size, dtype)
        ours = JaxTrainStep(bench, config, JaxTrainStep.init_variables(config, args.seed),
                            device, args.seed)
        host_batches = common.synthetic_batches(config, batch_size, 4, seed=args.seed)
        ours.compile(host_batches[0])
        ours_batches = [ours.put(b) for b in host_batches]
        peer = NnxPortStep(port, batch_size, args.supervision_steps, device, args.seed)
        peer_batches = peer.batches(4, args.seed)
        start = time.perf_counter()
        peer.sync(peer(peer_batches[0]))  # nnx.jit compiles on the first call
        peer_first_call_s = time.perf_counter() - start
        for i in range(args.warmup):
            ours.sync(ours(ours_batches[i % 4]))
            peer.sync(peer(peer_batches[(i + 1) % 4]))
        cases.append({
            "batch_size": batch_size,
            "ours": {"step": ours, "batches": ours_batches, "times": [], "ceilings": [],
                     "flops": common.model_flops_per_step(config, batch_size),
                     "compile_s": ours.compile_seconds},
            "peer": {"step": peer, "batches": peer_batches, "times": [], "ceilings": [],
                     "flops": nnx_port_flops_per_supervision_step(peer.cfg, batch_size),
                     "first_call_s": peer_first_call_s},
        })
        print(f"[peers] built batch {batch_size} (ours compiled in {ours.compile_seconds:.1f} s, "
              f"the port's first call {peer_first_call_s:.1f} s)", file=sys.stderr)
    for r in range(args.rounds):
        for case in cases:
            for side, per_call in (("ours", 1), ("peer", args.supervision_steps)):
                entry = case[side]
                entry["ceilings"].append(ceiling.measure())
                step, batches = entry["step"], entry["batches"]
                (seconds,) = common.time_calls(lambda i: step(batches[i % 4]), step.sync, 1,
                                               start_index=r)
                entry["times"].append(seconds / per_call)
        print(f"[peers] round {r + 1}/{args.rounds} done", file=sys.stderr)
    return {
        "schema": SCHEMA,
        "meta": common.run_metadata(argv),
        "device": {"jax_platform": device.platform, "kind": device.device_kind},
        "dtype": dtype,
        "peer": {"name": "Flax NNX port (mlp_t, no puzzle prefix)", "url": NNX_PORT_URL,
                 "git_commit": common.git_head(args.nnx_port_dir),
                 "config": dataclasses.asdict(cases[0]["peer"]["step"].cfg) if cases else None},
        "ceiling": ceiling.describe(),
        "rounds": args.rounds,
        "supervision_steps_per_peer_call": args.supervision_steps,
        "rows": [summarize_case(case) for case in cases],
    }


def summarize_case(case: dict[str, Any]) -> dict[str, Any]:
    """Per side: median step time, GFLOP/s, fraction of the ceiling; the paired ratio."""
    row: dict[str, Any] = {"batch_size": case["batch_size"]}
    for side in ("ours", "peer"):
        e = case[side]
        row[side] = {
            "flops_per_step": e["flops"],
            **common.ceiling_statistics(e["flops"], e["times"], e["ceilings"]),
            "per_round": [{"step_s": t, "ceiling_gflops_per_s": c / 1e9}
                          for t, c in zip(e["times"], e["ceilings"])],
        }
        row[side].update({k: e[k] for k in ("compile_s", "first_call_s") if k in e})
    ours, peer = case["ours"], case["peer"]
    row["peer_time_per_flop_over_ours"] = statistics.median(
        (tp / peer["flops"]) / (to / ours["flops"]) for tp, to in zip(peer["times"], ours["times"]))
    return row


def to_markdown(result: dict[str, Any]) -> str:
    """The report: one row per (implementation, batch), provenance."""
    meta, peer = result["meta"], result["peer"]
    rows = []
    for r in result["rows"]:
        for side, label in (("ours", "ours, `sudoku_mlp`"), ("peer", "NNX port")):
            s = r[side]
            rows.append([label, r["batch_size"], s["times"]["median_s"] * 1e3,
                         s["flops_per_step"] / 1e9, s["gflops_per_s"],
                         common.format_fraction_of_ceiling(s),
                         "—" if side == "ours" else f"{r['peer_time_per_flop_over_ours']:.2f}x"])
    lines = [
        f"## our step vs a JAX peer, {result['dtype']}, {result['device']['kind']}",
        "",
        common.markdown_table(["step", "batch", "median ms per train step", "GFLOP/step",
                               "GFLOP/s", "of ceiling: median (min-max)",
                               "peer time per FLOP / ours"], rows),
        f"- peer: {peer['name']}, {peer['url']} at {peer['git_commit']}; one train step = one "
        f"of its supervision steps (its call of {result['supervision_steps_per_peer_call']} "
        f"timed and divided)",
        f"- work: analytic matmul FLOPs per train step; ceiling: {result['ceiling']['text']}, "
        f"measured before every timed call; {result['rounds']} interleaved rounds",
        *common.provenance_lines(meta),
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """CLI entry point; returns the result document (also written as JSON + markdown)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    result = run(args, argv)
    name = common.report_name(args, result)
    common.write_report(os.path.join(args.out_dir, f"peers_{name}"), result, to_markdown(result),
                        "peers")
    return result


if __name__ == "__main__":
    try:
        main()
    except (AttributeError, FileNotFoundError, KeyError, RuntimeError, ValueError) as err:
        print(f"[peers] error: {err}", file=sys.stderr)
        sys.exit(2)
