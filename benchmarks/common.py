"""Shared pieces of the benchmark harness: named configs, synthetic batches, timing, reports.

Nothing here imports the PyTorch reference; ``reference_torch`` does that, only when asked.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import datetime as _dt
import glob
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from trm_jax import configs
from trm_jax.config import OptimConfig, TRMConfig
from trm_jax.data.loader import IGNORE_LABEL_ID
from trm_jax.fileio import atomic_write
from trm_jax.model.layers import swiglu_inner_size
from trm_jax.plan.shapes import ARC1_PUZZLE_IDENTIFIERS_UPPER_BOUND

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO_ROOT, "benchmarks", "results")
REFERENCE_ENV = "TRM_REFERENCE_DIR"


# The benchmark settings' optimiser: an OptimConfig whose global_batch_size is the default batch
# (the benchmarks pass their own) and whose total_steps only shapes the cosine, which
# lr_min_ratio 1.0 flattens.
BENCH_TOTAL_STEPS = 1_000_000


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """A named benchmark setting: the model, its optimiser and the default batch size."""

    name: str
    description: str
    model: Mapping[str, Any]  # TRMConfig fields except batch_size and forward_dtype
    optim: OptimConfig
    default_batch_size: int

    def model_config(self, batch_size: int, dtype: str, **overrides: Any) -> TRMConfig:
        """The ``TRMConfig`` of this setting at a batch size and forward dtype."""
        fields = dict(self.model)
        fields.update(overrides)
        return TRMConfig(batch_size=batch_size, forward_dtype=dtype, **fields)


def _experiment(
    name: str,
    description: str,
    seq_len: int,
    vocab_size: int,
    num_puzzle_identifiers: int,
    bench_name: str | None = None,
    **optim_changes: Any,
) -> BenchConfig:
    """The model and optimiser of the packaged experiment config ``name`` (trm_jax/experiments/),
    with the dataset's fields filled in (the benchmarks use synthetic batches of that shape)."""
    config = configs.load_config(name)
    model = configs.config_to_dict(config.model)
    for key in ("batch_size", "forward_dtype"):  # chosen per benchmark run
        del model[key]
    model.update(seq_len=seq_len, vocab_size=vocab_size, num_puzzle_identifiers=num_puzzle_identifiers)
    optim = dataclasses.replace(configs.optim_config(config, total_steps=BENCH_TOTAL_STEPS), **optim_changes)
    return BenchConfig(
        name=bench_name or name,
        description=description,
        model=model,
        optim=optim,
        default_batch_size=optim.global_batch_size,
    )


NAMED_CONFIGS: dict[str, BenchConfig] = {
    # Not an experiment: a model small enough for a smoke test, with the Sudoku optimiser.
    "tiny": BenchConfig(
        name="tiny",
        description="smoke-test model: 1 attention block, hidden 32, T=2, n=2",
        model=dict(
            seq_len=16,
            vocab_size=8,
            num_puzzle_identifiers=4,
            puzzle_emb_ndim=32,
            puzzle_emb_len=2,
            H_cycles=2,
            L_cycles=2,
            L_layers=1,
            hidden_size=32,
            num_heads=2,
            expansion=2.0,
            halt_max_steps=4,
            halt_exploration_prob=0.1,
            pos_encodings="rope",
        ),
        optim=dataclasses.replace(
            _experiment("sudoku_mlp", "", 81, 11, 1).optim, global_batch_size=8, lr_warmup_steps=10
        ),
        default_batch_size=8,
    ),
    "sudoku_mlp": _experiment(
        "sudoku_mlp", "Sudoku-Extreme, mlp_t blocks, no positions, T=3, n=6 (paper: 87.4%)", 81, 11, 1
    ),
    "sudoku_att": _experiment("sudoku_att", "Sudoku-Extreme, attention + RoPE, T=3, n=6 (paper: 74.7%)", 81, 11, 1),
    "maze": _experiment("maze", "Maze-Hard 30x30, attention + RoPE, T=3, n=4 (paper: 85.3%)", 900, 6, 1),
    "arc": _experiment(
        "arc1",
        "ARC-AGI-1 (+concept), attention + RoPE, T=3, n=4 (paper: 44.6% pass@2); "
        "puzzle table sized to an upper bound of the augmented puzzle count",
        900,
        12,
        ARC1_PUZZLE_IDENTIFIERS_UPPER_BOUND,
        bench_name="arc",
    ),
}


def get_config(name: str) -> BenchConfig:
    """Looks a named config up, with an error listing the known names."""
    if name not in NAMED_CONFIGS:
        raise KeyError(f"unknown benchmark config {name!r}; known: {', '.join(NAMED_CONFIGS)}")
    return NAMED_CONFIGS[name]


# --------------------------------------------------------------------------- batches


def synthetic_batches(config: TRMConfig, batch_size: int, count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``count`` random training batches in the reference's format (numpy, int32).

    Tokens avoid the pad id 0; about 10% of labels are ignored (-100) so the loss divisor is
    exercised; puzzle ids are drawn from the whole table (repeats included).
    """
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        shape = (batch_size, config.seq_len)
        inputs = rng.integers(1, config.vocab_size, size=shape, dtype=np.int32)
        labels = rng.integers(1, config.vocab_size, size=shape, dtype=np.int32)
        labels = np.where(rng.random(shape) < 0.1, IGNORE_LABEL_ID, labels).astype(np.int32)
        ids = rng.integers(0, config.num_puzzle_identifiers, size=(batch_size,), dtype=np.int32)
        batches.append({"inputs": inputs, "labels": labels, "puzzle_identifiers": ids})
    return batches


# --------------------------------------------------------------------------- timing


def time_calls(
    step: Callable[[int], Any], sync: Callable[[Any], None], count: int, start_index: int = 0
) -> list[float]:
    """Wall-clock seconds of ``count`` calls ``step(i)``, each synchronised by ``sync(result)``.

    Each call is timed on its own (start, call, wait for the device, stop), so the figure is
    the latency of one training step including its host-side dispatch.
    """
    times = []
    for i in range(start_index, start_index + count):
        start = time.perf_counter()
        sync(step(i))
        times.append(time.perf_counter() - start)
    return times


def summarize_times(times: Sequence[float]) -> dict[str, float]:
    """Median / min / max / mean (seconds) of a list of step times."""
    if not times:
        raise ValueError("summarize_times: no timings (steps must be >= 1)")
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "mean_s": statistics.fmean(times),
        "n": len(times),
    }


def ceiling_statistics(flops: float, times: Sequence[float], ceilings: Sequence[float]) -> dict[str, Any]:
    """Timings of work of ``flops`` FLOPs against the matmul ceilings (FLOP/s) measured in the
    same rounds: the times' summary, GFLOP/s at the median time, the median ceiling, and the
    fraction of the ceiling (median and range of the per-round ratios)."""
    fractions = [flops / t / c for t, c in zip(times, ceilings)]
    return {
        "times": summarize_times(times),
        "gflops_per_s": flops / statistics.median(times) / 1e9,
        "ceiling_gflops_per_s": statistics.median(ceilings) / 1e9,
        "fraction_of_ceiling": statistics.median(fractions),
        "fraction_of_ceiling_min_max": [min(fractions), max(fractions)],
    }


def format_fraction_of_ceiling(stats: Mapping[str, Any]) -> str:
    """``"64.3% (62-66)"``: the median fraction of the ceiling and its per-round range."""
    low, high = stats["fraction_of_ceiling_min_max"]
    return f"{100 * stats['fraction_of_ceiling']:.1f}% ({100 * low:.0f}-{100 * high:.0f})"


def host_peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux ``ru_maxrss`` is in KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


# --------------------------------------------------------------------------- FLOPs and MFU

# Dense (no sparsity) peak tensor-core throughput in FLOP/s, by device-name substring.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H100": {"bfloat16": 989e12, "float32": 494.5e12},  # SXM; fp32 = TF32 tensor cores
    "H200": {"bfloat16": 989e12, "float32": 494.5e12},
    "A100": {"bfloat16": 312e12, "float32": 156e12},
}


def peak_flops(device_kind: str, dtype: str) -> float | None:
    """Peak FLOP/s of a device for a dtype, or None when unknown (CPUs, other GPUs)."""
    for key, table in PEAK_FLOPS.items():
        if key.lower() in device_kind.lower():
            return table.get(dtype)
    return None


def xla_cost_flops(compiled: Any) -> float | None:
    """FLOPs of one call of an XLA-compiled executable from its cost analysis, if reported."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    return float(analysis["flops"])


def network_flops_per_call(config: TRMConfig, batch_size: int) -> float:
    """Analytic matmul FLOPs of one forward call of the shared network (2 per multiply-add):
    every linear layer of its ``L_layers`` blocks and, for attention, the score and
    weighted-value products."""
    L, D, B = config.total_len, config.hidden_size, batch_size

    def swiglu_flops(rows: int, width: int) -> float:
        inner = swiglu_inner_size(width, config.expansion)
        return 2.0 * rows * (width * 2 * inner + inner * width)

    block = swiglu_flops(B * L, D)
    if config.mlp_t:
        block += swiglu_flops(B * D, L)
    else:
        block += 2.0 * B * L * D * 3 * D + 2.0 * B * L * D * D  # qkv + out projections
        block += 2.0 * 2.0 * B * L * L * D  # scores and weighted values
    return config.L_layers * block


def model_flops_per_step(config: TRMConfig, batch_size: int) -> float:
    """Analytic matmul FLOPs of one ACT training step (2 per multiply-add).

    Counts every linear layer and the attention score/value products: T*(n+1) network calls
    forward (:func:`network_flops_per_call`), plus 2x forward for the backward of the last
    (differentiated) cycle's n+1 calls, plus the heads. Element-wise work (norms, RoPE,
    SwiGLU gating, loss) is left out, as in the usual MFU convention.
    """
    B, D = batch_size, config.hidden_size
    net = network_flops_per_call(config, batch_size)
    calls_forward = config.H_cycles * (config.L_cycles + 1)
    calls_backward = config.L_cycles + 1
    heads = 2.0 * B * config.seq_len * D * config.vocab_size + 2.0 * B * D * 2
    return net * (calls_forward + 2 * calls_backward) + 3 * heads


# --------------------------------------------------------------------------- provenance


def git_head(directory: str) -> str | None:
    """The commit checked out in ``directory`` (a git checkout), or None."""
    try:
        return subprocess.run(
            ["git", "-C", directory, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def git_commit() -> str | None:
    """The commit of this checkout (with ``-dirty`` if tracked files changed), or None."""
    head = git_head(REPO_ROOT)
    if head is None:
        return None
    try:
        dirty = subprocess.run(
            ["git", "-C", REPO_ROOT, "status", "--porcelain", "-uno", "--", "trm_jax", "benchmarks"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")


def library_versions() -> dict[str, str | None]:
    """Versions of Python and the numeric libraries in play (None when not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("jax", "jaxlib", "flax", "optax", "numpy", "torch"):
        try:
            module = __import__(name)
            versions[name] = getattr(module, "__version__", None)
        except ImportError:
            versions[name] = None
    return versions


def host_description() -> dict[str, Any]:
    """CPU model, core count and OS of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        # Other work on a shared machine slows every figure: record how busy it was.
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def load_text(host: Mapping[str, Any]) -> str:
    """The recorded 1/5/15-minute load averages as text."""
    load = host.get("load_average_1_5_15")
    return "n/a" if not load else "/".join(f"{x:.1f}" for x in load)


def run_metadata(argv: Sequence[str]) -> dict[str, Any]:
    """Provenance block of every result file: command, commit, versions, host, time."""
    return {
        "command": " ".join([os.path.relpath(sys.argv[0], REPO_ROOT) if sys.argv[0] else "python", *argv]),
        "git_commit": git_commit(),
        "versions": library_versions(),
        "host": host_description(),
        "timestamp_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def provenance_lines(meta: Mapping[str, Any]) -> list[str]:
    """The markdown lines every report ends with: command, commit and host, versions."""
    host = meta["host"]
    return [
        f"- command: `{meta['command']}`",
        f"- commit {meta['git_commit']}, {meta['timestamp_utc']}, host {host['cpu']} "
        f"({host['cpu_count']} cpus, load average at start {load_text(host)})",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
    ]


# --------------------------------------------------------------------------- output


def write_atomic(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file and a rename."""
    with atomic_write(path) as f:
        f.write(text)


def write_json(path: str, payload: Mapping[str, Any]) -> None:
    """Atomically writes a JSON document (sorted keys, 2-space indent)."""
    write_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_report(stem: str, result: Mapping[str, Any], markdown: str, tag: str) -> None:
    """Writes ``stem.json`` and ``stem.md`` atomically, prints the markdown and where they went."""
    write_json(stem + ".json", result)
    write_atomic(stem + ".md", markdown)
    print(markdown)
    print(f"[{tag}] wrote {stem}.json and {stem}.md", file=sys.stderr)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def parse_positive_ints(parser: Any, flag: str, text: str) -> list[int]:
    """A comma-separated list of positive integers from a command-line flag; anything else
    ends the program through ``parser.error`` with the flag's name."""
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        parser.error(f"{flag}: expected comma-separated integers, got {text!r}")
    if not values or min(values) < 1:
        parser.error(f"{flag}: expected positive integers")
    return values


def parse_config_names(parser: Any, text: str) -> list[str]:
    """A comma-separated list of named configs from ``--configs``; an unknown name ends the
    program through ``parser.error``, listing the known ones."""
    names = [c for c in text.split(",") if c]
    for name in names:
        if name not in NAMED_CONFIGS:
            parser.error(f"--configs: unknown config {name!r}; known: {', '.join(NAMED_CONFIGS)}")
    return names


def report_name(args: Any, result: Mapping[str, Any]) -> str:
    """``--name``, or ``<platform>_<dtype>`` of the run's device and dtype."""
    return args.name or f"{result['device']['jax_platform']}_{result['dtype']}"


def parse_model_overrides(parser: Any, items: Sequence[str]) -> dict[str, Any]:
    """``--set FIELD=VALUE`` items as a dict of model-config overrides; VALUE is read as a
    Python literal where it is one (``L_cycles=3``), else kept as a string
    (``saved_activations=all``). A malformed item ends the program through ``parser.error``."""
    overrides: dict[str, Any] = {}
    for item in items:
        field, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item!r}: expected FIELD=VALUE")
        try:
            overrides[field] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[field] = value
    return overrides


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats printed with 4 significant digits, None as n/a."""

    def cell(value: Any) -> str:
        if value is None:
            return "n/a"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def format_bytes(n: float | None) -> str | None:
    """Bytes as MiB with one decimal, or None."""
    return None if n is None else f"{n / 2**20:.1f} MiB"


def resolve_reference_dir(flag_value: str | None) -> str | None:
    """The reference checkout from ``--reference-dir`` or ``$TRM_REFERENCE_DIR`` (flag wins).

    Returns None when neither is given. A path that is given but is not a checkout of the
    official repository is an error naming the path and what was expected.
    """
    path = flag_value or os.environ.get(REFERENCE_ENV) or None
    if path is None:
        return None
    marker = os.path.join(path, "models", "recursive_reasoning", "trm.py")
    if not os.path.isfile(marker):
        raise FileNotFoundError(
            f"reference checkout {path!r} (from {'--reference-dir' if flag_value else REFERENCE_ENV})"
            f" has no models/recursive_reasoning/trm.py: expected a checkout of "
            f"SamsungSAILMontreal/TinyRecursiveModels"
        )
    return os.path.abspath(path)


# --------------------------------------------------------------------------- profiles

# Where a compiled step spends its time: a ``jax.profiler`` trace summed by kind of XLA
# operation (``--profile-dir`` of step_time.py and efficiency.py). The trace has one event per
# executed operation (fusions, copies, the loops' bodies); it is read through ``xprof`` (an
# optional dependency: ``pip install xprof``) and each event is classified from the optimised
# HLO of the executable: matrix products (with whatever XLA fused into them), copies and
# transposes, broadcasts (e.g. the zero-filled buffers a scan stacks its saved values into),
# dynamic slices/updates (the stacking itself), and the rest (element-wise work, reductions,
# the optimiser). Loop and call operations are left out: the operations inside them count.

OP_CATEGORIES = ("matmul", "copy/transpose", "broadcast", "dynamic slice/update", "other")
_CONTAINERS = ("while", "call", "conditional")
_INSTRUCTION = re.compile(r"\s*(?:ROOT )?%([\w.\-]+) = \S+ ([\w\-]+)\((.*)")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%([\w.\-]+) .*\{$")


def _parse_hlo(text: str) -> tuple[dict[str, tuple[str, str]], dict[str, set[str]]]:
    """(instruction -> (opcode, called computation or ""), computation -> opcodes inside)."""
    instructions: dict[str, tuple[str, str]] = {}
    opcodes: dict[str, set[str]] = collections.defaultdict(set)
    current = None
    for line in text.splitlines():
        header = _COMPUTATION.match(line)
        if header:
            current = header.group(1)
            continue
        inst = _INSTRUCTION.match(line)
        if inst and current is not None:
            name, opcode, rest = inst.groups()
            called = re.search(r"calls=%([\w.\-]+)", rest)
            instructions[name] = (opcode, called.group(1) if called else "")
            opcodes[current].add(opcode)
    return instructions, opcodes


def categorize(opcode: str, inner: set[str]) -> str | None:
    """The category of an operation from its opcode and, for a fusion, the opcodes it fuses;
    None for loops and calls."""
    if opcode in _CONTAINERS:
        return None
    ops = (inner if opcode == "fusion" else {opcode}) - {
        "parameter",
        "constant",
        "bitcast",
        "get-tuple-element",
        "tuple",
    }
    if ops & {"dot", "convolution", "custom-call"}:
        return "matmul"
    if ops and ops <= {"copy", "transpose", "slice", "concatenate", "pad"} and ops & {"copy", "transpose"}:
        return "copy/transpose"
    if ops and ops <= {"broadcast"}:
        return "broadcast"
    if ops & {"dynamic-update-slice", "dynamic-slice"} and not ops & {"exponential", "divide", "rsqrt", "reduce"}:
        return "dynamic slice/update"
    return "other"


def load_trace_events(trace_dir: str) -> list[dict[str, Any]]:
    """The complete events of the newest trace under ``trace_dir`` (needs ``xprof``)."""
    from xprof.convert import raw_to_tool_data  # noqa: PLC0415 - optional dependency

    paths = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True), key=os.path.getmtime)
    if not paths:
        raise FileNotFoundError(f"no *.xplane.pb under {trace_dir}")
    data, _ = raw_to_tool_data.xspace_to_tool_data([paths[-1]], "trace_viewer", {})
    return [e for e in json.loads(data)["traceEvents"] if e.get("ph") == "X"]


def busy_time(intervals: list[tuple[float, float]]) -> float:
    """The length of the union of ``(start, end)`` intervals: the time during which at least
    one of them runs."""
    busy, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop > end:
            busy += stop - max(start, end)
            end = stop
    return busy


def op_breakdown(hlo_text: str, events: list[dict[str, Any]], steps: int) -> dict[str, Any]:
    """Milliseconds per step by category, and the ten most expensive operations.

    ``total_ms`` sums the operations' durations; ``busy_ms`` (when the events carry start
    times) is the time during which at least one operation runs. XLA:CPU runs independent
    operations at the same time, so the first can exceed the second: an operation's duration
    then includes the time it shared the cores with another, and the categories' shares are
    shares of the summed durations, not of the wall-clock time.
    """
    instructions, opcodes = _parse_hlo(hlo_text)
    per_category: collections.Counter = collections.Counter()
    per_op: collections.Counter = collections.Counter()
    intervals = []
    for event in events:
        known = instructions.get(event["name"])
        if known is None:
            continue
        opcode, called = known
        category = categorize(opcode, opcodes.get(called, set()))
        if category is None:
            continue
        per_category[category] += event["dur"] / 1e3 / steps
        per_op[(event["name"], category)] += event["dur"] / 1e3 / steps
        if "ts" in event:
            intervals.append((event["ts"], event["ts"] + event["dur"]))
    total = sum(per_category.values())
    return {
        "steps": steps,
        "total_ms": total,
        "busy_ms": busy_time(intervals) / 1e3 / steps if intervals else None,
        "categories": {
            c: {"ms": per_category[c], "share": per_category[c] / total if total else 0.0} for c in OP_CATEGORIES
        },
        "top_ops": [{"name": name, "category": cat, "ms": ms} for (name, cat), ms in per_op.most_common(10)],
    }


def add_trained_model_args(parser: Any) -> None:
    """The options naming a trained model, as ``trm-jax evaluate`` takes them."""
    parser.add_argument("--workdir", help="a run directory of `trm-jax train`")
    parser.add_argument("--checkpoint", help="an orbax checkpoint directory (with --config)")
    parser.add_argument("--config", help="config name or file (with --checkpoint)")
    parser.add_argument("--step", type=int, default=None)
    parser.add_argument("--dataset", help="dataset directory (default: the run's)")


def load_trained_model(args: Any) -> tuple:
    """(config, model_config, optim_config, data_path, state, name) of the model the options of
    :func:`add_trained_model_args` name (``trm_jax.cli.resolve_model``)."""
    import argparse  # noqa: PLC0415

    from trm_jax import cli  # noqa: PLC0415

    source = argparse.Namespace(
        workdir=args.workdir,
        checkpoint=args.checkpoint,
        torch=None,
        config=args.config,
        step=args.step,
        dataset=args.dataset,
    )
    return cli.resolve_model(source, [])
