"""Step time of our JAX train step against the official PyTorch train step, same device.

    python benchmarks/step_time.py --config tiny --steps 20 --warmup 3
    python benchmarks/step_time.py --config arc --batch-size 768 --dtype bfloat16 \\
        --device gpu --reference-dir /path/to/TinyRecursiveModels

Both steps start from the same weights (ours, exported with ``to_torch_state_dict``) and see
the same batches, and the timed steps alternate (one of ours, one of the reference's), so a
machine that drifts moves both alike; each pair also gives a ratio. Before anything is timed,
both are run in float32 on the first batch and their losses must agree to 1e-4 relative;
otherwise the run stops, so two different computations are never compared. The reference half
is skipped, with a message, when no checkout is given (``--reference-dir`` /
``$TRM_REFERENCE_DIR``) or with ``--skip-reference``.

Writes ``<out-dir>/step_time_<config>_<device>_<dtype>_b<batch>[_<name>].{json,md}``.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# JAX must not grab most of the GPU up front: the PyTorch step shares the device.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import statistics  # noqa: E402
from typing import Any, Sequence  # noqa: E402

import jax  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.jax_step import JaxTrainStep, MatmulCeiling, bench_setup  # noqa: E402

SCHEMA = "trm-jax/step_time/v1"
LOSS_RTOL = 1e-4


class LossMismatchError(RuntimeError):
    """Our step and the reference step disagree on the first batch: nothing is timed."""


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="tiny", choices=sorted(common.NAMED_CONFIGS))
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default: the config's (768 for the paper configs)"
    )
    parser.add_argument("--steps", type=int, default=20, help="timed steps per implementation")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default=None,
        help="forward dtype; default bfloat16 on GPU (as the paper), float32 on CPU",
    )
    parser.add_argument(
        "--reference-dir", default=None, help=f"checkout of the official repository (or ${common.REFERENCE_ENV})"
    )
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument(
        "--microbatches",
        type=int,
        default=1,
        help="our step's optim.microbatches (the batch run as this many chunks, "
        "gradients summed); the reference always takes the whole batch",
    )
    parser.add_argument(
        "--no-compile-reference",
        action="store_true",
        help="run the reference eagerly on GPU too (it is compiled by default)",
    )
    parser.add_argument(
        "--profile-dir",
        default=None,
        help="after timing, trace 3 more steps of each implementation here "
        "(jax.profiler for ours -> TensorBoard/Perfetto; torch.profiler "
        "chrome trace for the reference)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=common.RESULTS_DIR)
    parser.add_argument(
        "--name", default=None, help="suffix of the output name, e.g. the machine (step_time_..._b8_NAME)"
    )
    args = parser.parse_args(argv)
    for name in ("steps", "warmup"):
        if getattr(args, name) < (1 if name == "steps" else 0):
            parser.error(f"--{name} must be >= {1 if name == 'steps' else 0}")
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    if args.microbatches < 1:
        parser.error("--microbatches must be >= 1")
    return args


def check_same_loss(ours: float, reference: float, rtol: float = LOSS_RTOL) -> dict[str, Any]:
    """Compares the first-batch losses; raises :class:`LossMismatchError` beyond ``rtol``."""
    rel = abs(ours - reference) / max(abs(reference), 1e-30)
    if not rel <= rtol:
        raise LossMismatchError(
            f"first-batch float32 loss differs: ours {ours!r} vs reference {reference!r} "
            f"(relative {rel:.3g} > {rtol}); refusing to time two different computations"
        )
    return {"status": "passed", "ours": ours, "reference": reference, "rel_diff": rel, "tolerance": rtol}


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    """Builds, checks, warms up and times both steps; returns the result document."""
    bench, device, dtype = bench_setup(args)
    on_gpu = device.platform == "gpu"
    batch_size = args.batch_size or bench.default_batch_size
    config = bench.model_config(batch_size, dtype)
    config32 = config.replace(forward_dtype="float32")
    torch_device = "cuda" if on_gpu else "cpu"

    reference_dir = None if args.skip_reference else common.resolve_reference_dir(args.reference_dir)
    if args.skip_reference:
        skip_reason = "--skip-reference given"
    elif reference_dir is None:
        skip_reason = f"no reference checkout: pass --reference-dir or set {common.REFERENCE_ENV}; timing our step only"
    else:
        skip_reason = None
    if skip_reason:
        print(f"[step_time] reference skipped: {skip_reason}", file=sys.stderr)

    num_batches = min(args.warmup + args.steps + 1, 32)
    batches = common.synthetic_batches(config, batch_size, num_batches, seed=args.seed)
    variables = JaxTrainStep.init_variables(config, args.seed)

    ours = ours32 = ref = None
    loss_check: dict[str, Any] = {"status": "skipped", "reason": skip_reason}
    ours_first_call = ref_first_call = None
    if reference_dir is not None:
        from benchmarks.reference_torch import ReferenceTrainStep
        from trm_jax.interop import to_torch_state_dict

        state_dict = to_torch_state_dict(variables)
        ours32 = JaxTrainStep(bench, config32, variables, device, args.seed, args.microbatches)
        ref32 = ReferenceTrainStep(
            reference_dir,
            config32,
            bench.optim,
            state_dict,
            torch_device,
            compile_model=on_gpu and not args.no_compile_reference,
        )
        ours32.compile(batches[0])
        first_batch = ours32.put(batches[0])
        timer = _Stopwatch()
        with timer:
            loss_ours = ours32.loss(ours32(first_batch))
        ours_first_call = timer.seconds
        ref_batch = ref32.to_device(batches[0])
        timer = _Stopwatch()
        with timer:
            loss_ref = float(ref32(ref_batch))
            ref32.synchronize()
        ref_first_call = timer.seconds
        loss_check = check_same_loss(loss_ours, loss_ref)
        if dtype == "float32":
            ours, ref = ours32, ref32
        else:
            ours_first_call = ref_first_call = None  # the float32 check's, not this dtype's
            del ours32, ref32
            ref = ReferenceTrainStep(
                reference_dir,
                config,
                bench.optim,
                state_dict,
                torch_device,
                compile_model=on_gpu and not args.no_compile_reference,
            )
    if ours is None:
        ours = JaxTrainStep(bench, config, variables, device, args.seed, args.microbatches)
    if ours.compile_seconds is None:
        ours.compile(batches[0])

    result: dict[str, Any] = {
        "schema": SCHEMA,
        "meta": common.run_metadata(argv),
        "config": {
            "name": bench.name,
            "description": bench.description,
            "batch_size": batch_size,
            "microbatches": args.microbatches,
            "dtype": dtype,
            "model": config.to_dict(),
            "optim": dataclasses.asdict(bench.optim),
        },
        "device": {"jax_platform": device.platform, "kind": device.device_kind, "torch_device": torch_device},
        "loss_check": loss_check,
        "timing": {"warmup": args.warmup, "steps": args.steps, "distinct_batches": num_batches},
        "flops_per_step_analytic": common.model_flops_per_step(config, batch_size),
    }

    ceiling = MatmulCeiling(device, dtype, args.seed)
    result["ceiling"] = ceiling.describe()

    # --- warm-up: ours, then the reference
    device_batches = [ours.put(b) for b in batches]
    first_call, ours_start = _warm_up(ours, ours.sync, device_batches, ours.steps_taken, args.warmup)
    ours_first_call = ours_first_call if first_call is None else first_call
    if ref is not None:
        ref_batches = [ref.to_device(b) for b in batches]
        first_call, ref_start = _warm_up(ref, ref.synchronize, ref_batches, ref.step_count, args.warmup)
        ref_first_call = ref_first_call if first_call is None else first_call
        ref.reset_peak_memory()

    # --- timed steps, interleaved (one of ours, one of the reference's): a machine that
    # speeds up or slows down during the run moves both alike, and each pair gives a ratio.
    ceiling_before = ceiling.measure()
    ours_times: list[float] = []
    ref_times: list[float] = []
    for k in range(args.steps):
        ours_times += common.time_calls(
            lambda i: ours(device_batches[i % num_batches]), ours.sync, 1, start_index=ours_start + k
        )
        if ref is not None:
            ref_times += common.time_calls(
                lambda i: ref(ref_batches[i % num_batches]), ref.synchronize, 1, start_index=ref_start + k
            )
    ceiling_flops = max(ceiling_before, ceiling.measure())
    result["timing"]["interleaved"] = ref is not None

    result["ours"] = _summary(
        ours_times,
        batch_size,
        config.seq_len,
        ours.compile_seconds,
        ours_first_call,
        ours.peak_memory_bytes(),
        result["flops_per_step_analytic"],
        ours.flops,
        device.device_kind,
        dtype,
    )
    _add_efficiency(result["ours"], result["flops_per_step_analytic"], ceiling_flops)
    result["ours"]["xla_memory"] = ours.memory_analysis
    result["ours"]["flops_per_step_xla"] = ours.flops
    if dtype != "float32" and loss_check["status"] == "passed":
        # JAX cannot reset its allocator's peak: it includes the float32 check step.
        result["ours"]["peak_memory_note"] = "includes the float32 loss-check step"

    if ref is not None:
        result["reference"] = _summary(
            ref_times,
            batch_size,
            config.seq_len,
            None,
            ref_first_call,
            ref.peak_memory_bytes(),
            result["flops_per_step_analytic"],
            ours.flops,
            device.device_kind,
            dtype,
        )
        _add_efficiency(result["reference"], result["flops_per_step_analytic"], ceiling_flops)
        result["reference"]["optimizer"] = (
            "adam_atan2 (CUDA)" if ref.uses_cuda_adam_atan2 else "AdamATan2Torch (pure PyTorch)"
        )
        result["reference"]["torch_compile"] = on_gpu and not args.no_compile_reference
        result["ratio_ours_over_reference"] = (
            result["ours"]["times"]["median_s"] / result["reference"]["times"]["median_s"]
        )
        paired = [o / r for o, r in zip(ours_times, ref_times)]
        result["ratio_paired"] = {"median": statistics.median(paired), "min": min(paired), "max": max(paired)}
    else:
        result["reference"] = None
        result["reference_skipped"] = skip_reason
        result["ratio_ours_over_reference"] = None
        result["ratio_paired"] = None
    if args.profile_dir:
        result["profiles"] = profile_steps(
            args.profile_dir, ours, device_batches, ref, ref_batches if ref is not None else None
        )
    result["host_peak_rss_bytes"] = common.host_peak_rss_bytes()
    return result


def _warm_up(step: Any, sync: Any, batches: list, steps_taken: int, warmup: int) -> tuple[float | None, int]:
    """Runs a step's first call (timed; skipped when the loss check already made it, on
    batch 0) and ``warmup`` more; returns (first call seconds or None, next batch index)."""
    first_call = None
    if steps_taken == 0:
        timer = _Stopwatch()
        with timer:
            sync(step(batches[0]))
        first_call = timer.seconds
    for i in range(warmup):
        sync(step(batches[(1 + i) % len(batches)]))
    return first_call, 1 + warmup


_TORCH_MATMUL_OPS = (
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::baddbmm",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_efficient_attention",
    "aten::_scaled_dot_product_flash_attention",
)


def profile_steps(
    profile_dir: str, ours: JaxTrainStep, ours_batches: list, ref: Any, ref_batches: list | None, steps: int = 3
) -> dict[str, Any]:
    """Traces ``steps`` more steps of each implementation; returns where the traces are and,
    per implementation, the milliseconds per step its matrix products took under the profiler
    against the whole (ours: ``common.op_breakdown`` over the XLA trace, when ``xprof`` is installed;
    the reference: self time of its matmul operators)."""
    out: dict[str, Any] = {}
    jax_dir = os.path.join(profile_dir, "jax")
    with jax.profiler.trace(jax_dir):
        for i in range(steps):
            ours.sync(ours(ours_batches[i % len(ours_batches)]))
    out["ours"] = jax_dir
    try:
        breakdown = common.op_breakdown(ours.hlo_text(), common.load_trace_events(jax_dir), steps)
        out["ours_matmul"] = {"matmul_ms": breakdown["categories"]["matmul"]["ms"], "total_ms": breakdown["total_ms"]}
    except ImportError:
        out["ours_matmul"] = None
    if ref is not None and ref_batches is not None:
        import torch

        activities = [torch.profiler.ProfilerActivity.CPU]
        on_cuda = ref.device.type == "cuda"
        if on_cuda:
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as prof:
            for i in range(steps):
                ref.synchronize(ref(ref_batches[i % len(ref_batches)]))
        path = os.path.join(profile_dir, "torch_trace.json")
        os.makedirs(profile_dir, exist_ok=True)
        prof.export_chrome_trace(path)
        out["reference"] = path
        field = "self_device_time_total" if on_cuda else "self_cpu_time_total"
        averages = prof.key_averages()
        total_us = sum(getattr(e, field, 0.0) for e in averages)
        matmul_us = sum(getattr(e, field, 0.0) for e in averages if e.key in _TORCH_MATMUL_OPS)
        out["reference_matmul"] = {"matmul_ms": matmul_us / 1e3 / steps, "total_ms": total_us / 1e3 / steps}
    return out


def _add_efficiency(block: dict[str, Any], flops: float, ceiling_flops_per_s: float) -> None:
    """Adds the achieved GFLOP/s (analytic FLOPs / median step) and its fraction of the matmul
    ceiling measured just before and after the timed steps (the faster of the two)."""
    achieved = flops / block["times"]["median_s"]
    block["gflops_per_s"] = achieved / 1e9
    block["ceiling_gflops_per_s"] = ceiling_flops_per_s / 1e9
    block["fraction_of_ceiling"] = achieved / ceiling_flops_per_s


class _Stopwatch(contextlib.AbstractContextManager):
    def __enter__(self) -> "_Stopwatch":
        import time

        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        import time

        self.seconds = time.perf_counter() - self._start


def _summary(
    times: list[float],
    batch_size: int,
    seq_len: int,
    compile_s: float | None,
    first_call_s: float | None,
    peak_memory: int | None,
    flops_analytic: float,
    flops_xla: float | None,
    device_kind: str,
    dtype: str,
) -> dict[str, Any]:
    """Timing statistics plus throughput and MFU of one implementation.

    MFU divides the analytic model FLOPs of a step (the same for both implementations) by
    the median step time and the device's peak. ``mfu_xla`` uses XLA's cost analysis
    instead, which counts the body of a loop (our scans over the recursion) once, so it is
    a lower bound whenever n or T exceeds 1.
    """
    stats = common.summarize_times(times)
    peak = common.peak_flops(device_kind, dtype)

    def mfu(flops: float | None) -> float | None:
        return None if (peak is None or flops is None) else flops / stats["median_s"] / peak

    return {
        "times": stats,
        "tokens_per_s": batch_size * seq_len / stats["median_s"],
        "compile_s": compile_s,
        "first_call_s": first_call_s,
        "peak_memory_bytes": peak_memory,
        "mfu": mfu(flops_analytic),
        "mfu_xla": mfu(flops_xla),
        "peak_flops_per_s": peak,
    }


def to_markdown(result: dict[str, Any]) -> str:
    """The result as a short markdown report (a table per implementation + provenance)."""
    cfg, meta = result["config"], result["meta"]
    rows = []
    for name in ("ours", "reference"):
        r = result.get(name)
        if not r:
            continue
        t = r["times"]
        rows.append(
            [
                name,
                t["median_s"] * 1e3,
                t["min_s"] * 1e3,
                t["max_s"] * 1e3,
                r["tokens_per_s"],
                r["compile_s"],
                r["first_call_s"],
                common.format_bytes(r["peak_memory_bytes"]),
                common.format_bytes((r.get("xla_memory") or {}).get("total_bytes")),
                None if r["mfu"] is None else f"{100 * r['mfu']:.1f}%",
                r["gflops_per_s"],
                f"{100 * r['fraction_of_ceiling']:.1f}%",
            ]
        )
    table = common.markdown_table(
        [
            "impl",
            "median ms",
            "min ms",
            "max ms",
            "tokens/s",
            "compile s",
            "first call s",
            "device peak mem",
            "XLA memory plan",
            "MFU",
            "GFLOP/s",
            "of matmul ceiling",
        ],
        rows,
    )
    check = result["loss_check"]
    check_line = (
        f"loss check (float32, first batch): ours {check['ours']:.8g}, reference "
        f"{check['reference']:.8g}, rel diff {check['rel_diff']:.2g} "
        f"(tolerance {check['tolerance']})"
        if check["status"] == "passed"
        else f"loss check skipped: {check['reason']}"
    )
    ratio = result.get("ratio_ours_over_reference")
    lines = [
        f"## step time: `{cfg['name']}`, batch {cfg['batch_size']}"
        + (f" (ours in {cfg['microbatches']} microbatches)" if cfg["microbatches"] > 1 else "")
        + f", {cfg['dtype']}, {result['device']['kind']}",
        "",
        table,
        f"- ratio ours / reference (median step time): "
        f"{'n/a (reference skipped)' if ratio is None else f'{ratio:.3f}'}"
        + (
            ""
            if ratio is None
            else f"; per interleaved pair of steps: median {result['ratio_paired']['median']:.3f} "
            f"(min {result['ratio_paired']['min']:.3f}, max {result['ratio_paired']['max']:.3f})"
        ),
        f"- {check_line}",
        f"- FLOPs per step: XLA cost analysis {_fmt(result['ours']['flops_per_step_xla'])}, "
        f"analytic (matmuls) {_fmt(result['flops_per_step_analytic'])}. MFU uses the analytic "
        f"figure for both implementations (XLA counts a scan body once, so its figure "
        f"undercounts the recursion); n/a without a known peak (CPUs). GFLOP/s: the analytic "
        f"FLOPs per median step; matmul ceiling: {result['ceiling']['text']}, the faster of "
        f"two measurements just before and after the timed steps",
        f"- memory: device peak from the allocators (CUDA only); XLA memory plan = arguments"
        f" + outputs - donated + temporaries of our compiled step; host peak RSS of the whole"
        f" process (both implementations): {common.format_bytes(result['host_peak_rss_bytes'])}",
        *_profile_lines(result.get("profiles")),
        *common.provenance_lines(meta),
        "",
    ]
    return "\n".join(lines)


def _profile_lines(profiles: dict[str, Any] | None) -> list[str]:
    """Where the traces are and how much of each step the matrix products took under them."""
    if not profiles:
        return []
    parts = []
    for side, label in (("ours", "ours"), ("reference", "reference")):
        split = profiles.get(f"{side}_matmul")
        if split:
            parts.append(
                f"{label} {split['matmul_ms']:.0f} of {split['total_ms']:.0f} ms "
                f"({100 * split['matmul_ms'] / split['total_ms']:.0f}%)"
            )
    where = ", ".join(f"`{profiles[k]}`" for k in ("ours", "reference") if k in profiles)
    return [
        f"- profiles in {where}; matrix products per step under the profiler: "
        + ("; ".join(parts) if parts else "n/a (pip install xprof for ours)")
    ]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def output_stem(result: dict[str, Any], name: str | None = None) -> str:
    cfg = result["config"]
    return f"step_time_{cfg['name']}_{result['device']['jax_platform']}_{cfg['dtype']}_b{cfg['batch_size']}" + (
        f"_{name}" if name else ""
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """CLI entry point; returns the result document (also written as JSON + markdown)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    result = run(args, argv)
    stem = os.path.join(args.out_dir, output_stem(result, args.name))
    common.write_report(stem, result, to_markdown(result), "step_time")
    return result


if __name__ == "__main__":
    try:
        main()
    except (LossMismatchError, FileNotFoundError, ModuleNotFoundError, KeyError, RuntimeError) as err:
        print(f"[step_time] error: {err}", file=sys.stderr)
        sys.exit(2)
