"""How cost and accuracy scale with recursion depth.

Two sweeps:

``train``: step time, compile time and memory of our train step (and the official step when a
reference checkout is given) over a grid of L_cycles (n) and H_cycles (T). One ACT step calls
the network T*(n+1) times, so runtime should be linear in T*(n+1); the recursion is a scan,
so compile time should not grow with n or T; only the last H cycle is differentiated, so
activation memory should not grow with T::

    python benchmarks/depth_scaling.py train --config tiny --L-cycles 1,2,4 --H-cycles 1,2,3

``inference``: accuracy versus the number of supervision (ACT) steps at test time, from 1 to
``4 x halt_max_steps``, rows never reset, for given weights (random init, an official
``state_dict`` file, or one of our checkpoints) on a dataset's test split (or synthetic
batches, where accuracy only shows the pipeline runs)::

    python benchmarks/depth_scaling.py inference --config sudoku_mlp \\
        --weights torch:step_50000.pt --data-dir data/sudoku-extreme --max-examples 1024

Each writes JSON + markdown + a PNG plot under ``--out-dir``.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import argparse  # noqa: E402
import functools  # noqa: E402
import time  # noqa: E402
from typing import Any, Iterator, Sequence  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.jax_step import JaxTrainStep, bench_setup  # noqa: E402
from trm_jax.config import TRMConfig  # noqa: E402
from trm_jax.fileio import atomic_write_with  # noqa: E402

TRAIN_SCHEMA = "trm-jax/depth_scaling/v1"
INFERENCE_SCHEMA = "trm-jax/inference_depth/v1"


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="sweep", required=True)

    def shared(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", default="tiny", choices=sorted(common.NAMED_CONFIGS))
        p.add_argument("--batch-size", type=int, default=None)
        p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
        p.add_argument(
            "--dtype", choices=("float32", "bfloat16"), default=None, help="default bfloat16 on GPU, float32 on CPU"
        )
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out-dir", default=common.RESULTS_DIR)
        p.add_argument("--no-plot", action="store_true")

    train = sub.add_parser("train", help="step/compile time and memory over (n, T)")
    shared(train)
    train.add_argument("--L-cycles", type=_int_list, default=[1, 2, 4, 6], help="n values")
    train.add_argument("--H-cycles", type=_int_list, default=[1, 2, 3, 4], help="T values")
    train.add_argument("--steps", type=int, default=5)
    train.add_argument("--warmup", type=int, default=1)
    train.add_argument("--reference-dir", default=None)
    train.add_argument("--skip-reference", action="store_true")

    inference = sub.add_parser("inference", help="accuracy vs supervision steps at test time")
    shared(inference)
    inference.add_argument(
        "--weights", default="random", help="'random', 'torch:<state_dict file>' or 'checkpoint:<dir>'"
    )
    inference.add_argument(
        "--data-dir", default=None, help="dataset directory (its test split); synthetic batches if absent"
    )
    inference.add_argument("--max-examples", type=int, default=256)
    inference.add_argument("--max-steps", type=int, default=None, help="default 4 x halt_max_steps")
    args = parser.parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    if args.sweep == "train" and (args.steps < 1 or args.warmup < 0):
        parser.error("--steps must be >= 1 and --warmup >= 0")
    return args


# =========================================================================== train sweep


def train_sweep(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    """Times our step (and the reference's) at every (n, T) of the grid."""
    bench, device, dtype = bench_setup(args)
    on_gpu = device.platform == "gpu"
    batch_size = args.batch_size or bench.default_batch_size
    reference_dir = None if args.skip_reference else common.resolve_reference_dir(args.reference_dir)
    if reference_dir is None:
        reason = (
            "--skip-reference given"
            if args.skip_reference
            else (f"no reference checkout (--reference-dir / {common.REFERENCE_ENV})")
        )
        print(f"[depth_scaling] reference skipped: {reason}", file=sys.stderr)

    points = []
    for T in args.H_cycles:
        for n in args.L_cycles:
            config = bench.model_config(batch_size, dtype, H_cycles=T, L_cycles=n)
            print(f"[depth_scaling] T={T} n={n}", file=sys.stderr)
            point = {
                "H_cycles": T,
                "L_cycles": n,
                "net_calls": T * (n + 1),
                "ours": _time_ours(bench, config, device, args),
            }
            if reference_dir is not None:
                point["reference"] = _time_reference(bench, config, reference_dir, on_gpu, args)
            points.append(point)

    result = {
        "schema": TRAIN_SCHEMA,
        "meta": common.run_metadata(argv),
        "config": {
            "name": bench.name,
            "batch_size": batch_size,
            "dtype": dtype,
            "model": bench.model_config(batch_size, dtype).to_dict(),
        },
        "device": {"jax_platform": device.platform, "kind": device.device_kind},
        "timing": {"steps": args.steps, "warmup": args.warmup},
        "reference_included": reference_dir is not None,
        "points": points,
    }
    return add_fits(result)


def forward_equivalent_calls(H_cycles: int, L_cycles: int) -> int:
    """Network calls of one step counting the backward of the differentiated last cycle as
    two forward calls: (T-1)(n+1) + 3(n+1) = (T+2)(n+1)."""
    return (H_cycles + 2) * (L_cycles + 1)


def add_fits(result: dict[str, Any]) -> dict[str, Any]:
    """Adds least-squares fits of median step time against T(n+1) and (T+2)(n+1)."""
    fits: dict[str, Any] = {}
    for name in ("ours", "reference"):
        points = [p for p in result["points"] if name in p]
        if not points:
            continue
        times = [p[name]["median_s"] for p in points]
        fits[name] = {
            "net_calls": linear_fit([p["net_calls"] for p in points], times),
            "forward_equivalent_calls": linear_fit(
                [forward_equivalent_calls(p["H_cycles"], p["L_cycles"]) for p in points], times
            ),
        }
    result["fits"] = fits
    return result


def _time_ours(
    bench: common.BenchConfig, config: TRMConfig, device: jax.Device, args: argparse.Namespace
) -> dict[str, Any]:
    count = args.warmup + args.steps
    batches = common.synthetic_batches(config, config.batch_size, min(count, 8), seed=args.seed)
    variables = JaxTrainStep.init_variables(config, args.seed)
    step = JaxTrainStep(bench, config, variables, device, args.seed)
    compile_s = step.compile(batches[0])
    device_batches = [step.put(b) for b in batches]
    for i in range(args.warmup):
        step.sync(step(device_batches[i % len(batches)]))
    times = common.time_calls(
        lambda i: step(device_batches[i % len(batches)]), step.sync, args.steps, start_index=args.warmup
    )
    stats = common.summarize_times(times)
    memory = step.memory_analysis or {}
    return {
        "median_s": stats["median_s"],
        "min_s": stats["min_s"],
        "max_s": stats["max_s"],
        "compile_s": compile_s,
        "xla_temp_bytes": memory.get("temp_size_in_bytes"),
        "xla_total_bytes": memory.get("total_bytes"),
        "peak_memory_bytes": step.peak_memory_bytes(),
        "flops_per_step_xla": step.flops,
    }


def _time_reference(
    bench: common.BenchConfig, config: TRMConfig, reference_dir: str, on_gpu: bool, args: argparse.Namespace
) -> dict[str, Any]:
    from benchmarks.reference_torch import ReferenceTrainStep
    from trm_jax.interop import to_torch_state_dict

    count = args.warmup + args.steps + 1
    batches = common.synthetic_batches(config, config.batch_size, min(count, 8), seed=args.seed)
    state_dict = to_torch_state_dict(JaxTrainStep.init_variables(config, args.seed))
    step = ReferenceTrainStep(
        reference_dir, config, bench.optim, state_dict, "cuda" if on_gpu else "cpu", compile_model=on_gpu
    )
    torch_batches = [step.to_device(b) for b in batches]
    start = time.perf_counter()
    step.synchronize(step(torch_batches[0]))
    first_call_s = time.perf_counter() - start
    for i in range(args.warmup):
        step.synchronize(step(torch_batches[(1 + i) % len(batches)]))
    step.reset_peak_memory()
    times = common.time_calls(
        lambda i: step(torch_batches[i % len(batches)]), step.synchronize, args.steps, start_index=1 + args.warmup
    )
    stats = common.summarize_times(times)
    return {
        "median_s": stats["median_s"],
        "min_s": stats["min_s"],
        "max_s": stats["max_s"],
        "first_call_s": first_call_s,
        "peak_memory_bytes": step.peak_memory_bytes(),
    }


def linear_fit(x: Sequence[float], y: Sequence[float]) -> dict[str, float | None]:
    """Least-squares ``y = intercept + slope * x`` with its R^2 (None with < 2 distinct x)."""
    xs, ys = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(set(xs.tolist())) < 2:
        return {"slope": None, "intercept": None, "r2": None}
    slope, intercept = np.polyfit(xs, ys, 1)
    residual = ys - (intercept + slope * xs)
    total = np.sum((ys - ys.mean()) ** 2)
    r2 = 1.0 - float(np.sum(residual**2) / total) if total > 0 else 1.0
    return {"slope": float(slope), "intercept": float(intercept), "r2": r2}


def train_markdown(result: dict[str, Any]) -> str:
    cfg, meta = result["config"], result["meta"]
    with_ref = result["reference_included"]
    header = ["T", "n", "T(n+1)", "ours ms", "ours compile s", "ours XLA temp", "ours peak mem"]
    if with_ref:
        header += ["ref ms", "ref first call s", "ref peak mem", "ours/ref"]
    rows = []
    for p in result["points"]:
        o = p["ours"]
        row = [
            p["H_cycles"],
            p["L_cycles"],
            p["net_calls"],
            o["median_s"] * 1e3,
            o["compile_s"],
            common.format_bytes(o["xla_temp_bytes"]),
            common.format_bytes(o["peak_memory_bytes"]),
        ]
        if with_ref:
            r = p["reference"]
            row += [
                r["median_s"] * 1e3,
                r["first_call_s"],
                common.format_bytes(r["peak_memory_bytes"]),
                o["median_s"] / r["median_s"],
            ]
        rows.append(row)
    fit_lines = [
        f"- linear fit of median step time, {name}: vs T(n+1): "
        f"{_fit_text(fit['net_calls'])}; vs (T+2)(n+1) (backward = 2 forward): "
        f"{_fit_text(fit['forward_equivalent_calls'])}"
        for name, fit in result["fits"].items()
    ]
    return "\n".join(
        [
            f"## depth scaling: `{cfg['name']}`, batch {cfg['batch_size']}, {cfg['dtype']}, {result['device']['kind']}",
            "",
            common.markdown_table(header, rows),
            *fit_lines,
            *common.provenance_lines(meta),
            "",
        ]
    )


def _fit_text(fit: dict[str, float | None]) -> str:
    if fit["slope"] is None:
        return "n/a (fewer than two distinct T(n+1))"
    return f"{fit['slope'] * 1e3:.4g} ms per call + {fit['intercept'] * 1e3:.4g} ms, R^2 {fit['r2']:.4f}"


def train_plot(result: dict[str, Any], path: str) -> None:
    """Step time against (T+2)(n+1) with its fit, compile time against T(n+1), and XLA
    temporary memory against n with one line per T (flat in T = the lines coincide)."""
    fig, axes = _subplots(1, 3, figsize=(15, 4.2))
    points = result["points"]
    fwd = np.array([forward_equivalent_calls(p["H_cycles"], p["L_cycles"]) for p in points])
    calls = np.array([p["net_calls"] for p in points])
    series = [("ours", "o", "tab:blue")]
    if result["reference_included"]:
        series.append(("reference", "s", "tab:orange"))
    for name, marker, colour in series:
        ms = np.array([p[name]["median_s"] * 1e3 for p in points])
        axes[0].plot(fwd, ms, marker, color=colour, label=name)
        fit = result["fits"][name]["forward_equivalent_calls"]
        if fit["slope"] is not None:
            xs = np.linspace(0, fwd.max(), 50)
            axes[0].plot(
                xs,
                1e3 * (fit["intercept"] + fit["slope"] * xs),
                "-",
                color=colour,
                alpha=0.5,
                label=f"{name} fit (R²={fit['r2']:.3f})",
            )
        if name == "ours":
            for x, y, p in zip(fwd, ms, points):
                axes[0].annotate(f"T{p['H_cycles']}n{p['L_cycles']}", (x, y), fontsize=7)
    axes[1].plot(calls, [p["ours"]["compile_s"] for p in points], "o", color="tab:blue", label="ours (XLA compile)")
    if result["reference_included"]:
        axes[1].plot(
            calls,
            [p["reference"]["first_call_s"] for p in points],
            "s",
            color="tab:orange",
            label="reference (first call)",
        )
    for T in sorted({p["H_cycles"] for p in points}):
        row = sorted(
            (p["L_cycles"], p["ours"]["xla_temp_bytes"])
            for p in points
            if p["H_cycles"] == T and p["ours"]["xla_temp_bytes"] is not None
        )
        if row:
            axes[2].plot(
                [n for n, _ in row], [b / 2**20 for _, b in row], "o-", label=f"ours XLA temp, T={T}", alpha=0.7
            )
    labels = (
        ("median step time (ms)", "forward-equivalent network calls, (T+2)(n+1)"),
        ("compile / first-call time (s)", "network calls per step, T(n+1)"),
        ("XLA temporary memory (MiB)", "n (L_cycles)"),
    )
    for ax, (title, xlabel) in zip(axes, labels):
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    cfg = result["config"]
    fig.suptitle(f"{cfg['name']}, batch {cfg['batch_size']}, {cfg['dtype']}, {result['device']['kind']}")
    fig.tight_layout()
    _save_figure(fig, path)


# =========================================================================== inference sweep


@functools.partial(jax.jit, static_argnames=("config", "num_steps"))
def supervision_curve(
    config: TRMConfig, variables: Any, batch: dict[str, jax.Array], num_steps: int
) -> dict[str, jax.Array]:
    """Per-step correctness counts of ``num_steps`` evaluation ACT steps on one batch.

    A reduction of :func:`trm_jax.train.depth_curve.depth_trace` (no row halts and is reset
    before the end: step k's predictions are what the model answers after k supervision
    steps). Returns arrays of shape [num_steps]: ``exact`` (rows fully correct),
    ``token_accuracy`` (sum over rows of per-row token accuracy), ``q_halt_positive`` (rows
    whose halt logit is > 0) and the scalar ``rows`` (rows with at least one label).
    """
    from trm_jax.train.depth_curve import depth_trace

    trace = depth_trace(config, variables, batch, num_steps)
    valid = trace["valid"][:, None]
    return {
        "exact": jnp.sum(valid & trace["exact"], axis=0),
        "token_accuracy": jnp.sum(jnp.where(valid, trace["accuracy"], 0.0), axis=0),
        "q_halt_positive": jnp.sum(valid & (trace["q_halt_logits"] > 0), axis=0),
        "rows": trace["valid"].sum(),
    }


def dataset_batches(data_dir: str, batch_size: int, max_examples: int) -> Iterator[dict[str, np.ndarray]]:
    """Test-split examples of a dataset directory in order, in padded batches.

    Labels equal to the dataset's ``ignore_label_id`` become -100; the last batch is padded
    with pad tokens and fully ignored labels (those rows count nowhere).
    """
    from trm_jax.data.format import load_split, read_metadata

    split_dir = os.path.join(data_dir, "test")
    meta = read_metadata(split_dir)
    remaining = max_examples
    for set_name in meta.sets:
        arrays = load_split(split_dir, set_name, metadata=meta)
        per_example_ids = np.repeat(
            np.asarray(arrays.puzzle_identifiers, np.int32), np.diff(np.asarray(arrays.puzzle_indices))
        )
        total = min(len(arrays.inputs), remaining)
        for start in range(0, total, batch_size):
            stop = min(start + batch_size, total)
            inputs = np.full((batch_size, meta.seq_len), meta.pad_id, np.int32)
            labels = np.full((batch_size, meta.seq_len), common.IGNORE_LABEL_ID, np.int32)
            ids = np.full((batch_size,), meta.blank_identifier_id, np.int32)
            inputs[: stop - start] = arrays.inputs[start:stop]
            raw = np.asarray(arrays.labels[start:stop], np.int32)
            if meta.ignore_label_id is not None:
                raw = np.where(raw == meta.ignore_label_id, common.IGNORE_LABEL_ID, raw)
            labels[: stop - start] = raw
            ids[: stop - start] = per_example_ids[start:stop]
            yield {"inputs": inputs, "labels": labels, "puzzle_identifiers": ids}
        remaining -= total
        if remaining <= 0:
            return


def load_weights(spec: str, config: TRMConfig, seed: int) -> tuple[Any, str]:
    """Variables from ``random``, ``torch:<file>`` (an official state_dict) or
    ``checkpoint:<dir>`` (ours); returns (variables, description)."""
    if spec == "random":
        return JaxTrainStep.init_variables(config, seed), f"random init (seed {seed})"
    kind, _, path = spec.partition(":")
    if kind == "torch" and path:
        from trm_jax.interop import load_torch_checkpoint

        return load_torch_checkpoint(path, config), f"official state_dict {path}"
    if kind == "checkpoint" and path:
        from benchmarks.jax_step import load_checkpoint_variables

        return load_checkpoint_variables(path, config), f"trm-jax checkpoint {path}"
    raise ValueError(f"--weights {spec!r}: expected 'random', 'torch:<file>' or 'checkpoint:<dir>'")


def inference_sweep(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    """Accuracy after 1 .. max_steps supervision steps, over the chosen examples."""
    bench, device, dtype = bench_setup(args)
    batch_size = args.batch_size or min(bench.default_batch_size, args.max_examples)
    config = bench.model_config(batch_size, dtype)
    max_steps = args.max_steps or 4 * config.halt_max_steps
    if args.data_dir:
        batches = dataset_batches(args.data_dir, batch_size, args.max_examples)
        source = f"test split of {args.data_dir}"
    else:
        count = -(-args.max_examples // batch_size)
        batches = iter(common.synthetic_batches(config, batch_size, count, seed=args.seed))
        source = "synthetic random batches (accuracy is meaningless: pipeline check only)"
    with jax.default_device(device):
        variables, weights = load_weights(args.weights, config, args.seed)
        totals: dict[str, np.ndarray] = {}
        rows = 0
        start = time.perf_counter()
        for batch in batches:
            stats = jax.device_get(
                supervision_curve(config, variables, {k: jnp.asarray(v) for k, v in batch.items()}, max_steps)
            )
            rows += int(stats.pop("rows"))
            for k, v in stats.items():
                totals[k] = totals.get(k, 0) + np.asarray(v, np.float64)
        seconds = time.perf_counter() - start
    if rows == 0:
        raise ValueError(f"inference sweep: no labelled rows in {source}")
    curve = [
        {
            "steps": k + 1,
            "exact_accuracy": totals["exact"][k] / rows,
            "token_accuracy": totals["token_accuracy"][k] / rows,
            "q_halt_positive_fraction": totals["q_halt_positive"][k] / rows,
        }
        for k in range(max_steps)
    ]
    return {
        "schema": INFERENCE_SCHEMA,
        "meta": common.run_metadata(argv),
        "config": {"name": bench.name, "batch_size": batch_size, "dtype": dtype, "model": config.to_dict()},
        "device": {"jax_platform": device.platform, "kind": device.device_kind},
        "weights": weights,
        "data": source,
        "rows": rows,
        "seconds": seconds,
        "halt_max_steps": config.halt_max_steps,
        "max_steps": max_steps,
        "curve": curve,
    }


def inference_markdown(result: dict[str, Any]) -> str:
    H = result["halt_max_steps"]
    marks = sorted({1, H // 2 or 1, H, 2 * H, 3 * H, result["max_steps"]} & set(range(1, result["max_steps"] + 1)))
    rows = [
        [c["steps"], c["exact_accuracy"], c["token_accuracy"], c["q_halt_positive_fraction"]]
        for c in result["curve"]
        if c["steps"] in marks
    ]
    meta = result["meta"]
    return "\n".join(
        [
            f"## accuracy vs supervision steps: `{result['config']['name']}`, {result['weights']}",
            "",
            f"data: {result['data']} ({result['rows']} rows); trained with halt_max_steps {H}",
            "",
            common.markdown_table(["steps", "exact acc", "token acc", "q_halt > 0"], rows),
            f"- command: `{meta['command']}`",
            f"- commit {meta['git_commit']}, {meta['timestamp_utc']}, device {result['device']['kind']}",
            "",
        ]
    )


def inference_plot(result: dict[str, Any], path: str) -> None:
    fig, ax = _subplots(figsize=(6.5, 4.2))
    steps = [c["steps"] for c in result["curve"]]
    for key, label in (
        ("exact_accuracy", "exact"),
        ("token_accuracy", "token"),
        ("q_halt_positive_fraction", "q_halt > 0"),
    ):
        ax.plot(steps, [c[key] for c in result["curve"]], label=label)
    ax.axvline(result["halt_max_steps"], color="grey", linestyle="--", label="halt_max_steps")
    ax.set_xlabel("supervision steps at inference")
    ax.set_ylabel("fraction of rows")
    ax.set_title(f"{result['config']['name']}: {result['weights']}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save_figure(fig, path)


# =========================================================================== plumbing


def _subplots(*grid: int, figsize: tuple[float, float]) -> tuple[Any, Any]:
    """A figure and its axes without pyplot (no backend is selected)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid)


def _save_figure(fig: Any, path: str) -> None:
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """CLI entry point; returns the result document (also written as JSON, markdown, PNG)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    if args.sweep == "train":
        result = train_sweep(args, argv)
        cfg = result["config"]
        stem = f"depth_scaling_{cfg['name']}_{result['device']['jax_platform']}_{cfg['dtype']}_b{cfg['batch_size']}"
        markdown, plot = train_markdown(result), train_plot
    else:
        result = inference_sweep(args, argv)
        weights = args.weights.split(":", 1)[0]
        stem = f"inference_depth_{result['config']['name']}_{weights}"
        markdown, plot = inference_markdown(result), inference_plot
    stem = os.path.join(args.out_dir, stem)
    common.write_json(stem + ".json", result)
    common.write_atomic(stem + ".md", markdown)
    if not args.no_plot:
        plot(result, stem + ".png")
    print(markdown)
    print(f"[depth_scaling] wrote {stem}.json/.md" + ("" if args.no_plot else "/.png"), file=sys.stderr)
    return result


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ModuleNotFoundError, KeyError, ValueError, RuntimeError) as err:
        print(f"[depth_scaling] error: {err}", file=sys.stderr)
        sys.exit(2)
