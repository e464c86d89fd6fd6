"""Where a compiled step spends its time: a profiler trace summed by kind of XLA operation.

``jax.profiler.trace`` records one event per executed XLA operation (fusions, copies, the
loops' bodies). :func:`op_breakdown` reads such a trace (through ``xprof``, an optional
dependency: ``pip install xprof``) and sums the events by what the operation does, read
from the optimised HLO of the executable: matrix products (with whatever XLA fused into
them), copies and transposes, broadcasts (e.g. the zero-filled buffers a scan stacks its
saved values into), dynamic slices/updates (the stacking itself), and the rest
(element-wise work, reductions, the optimiser). Loop and call operations are left out:
their time is that of the operations inside them, which are counted.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import re
from typing import Any

CATEGORIES = ("matmul", "copy/transpose", "broadcast", "dynamic slice/update", "other")
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
    ops = (inner if opcode == "fusion" else {opcode}) - {"parameter", "constant", "bitcast",
                                                         "get-tuple-element", "tuple"}
    if ops & {"dot", "convolution", "custom-call"}:
        return "matmul"
    if ops and ops <= {"copy", "transpose", "slice", "concatenate", "pad"} and ops & {"copy",
                                                                                    "transpose"}:
        return "copy/transpose"
    if ops and ops <= {"broadcast"}:
        return "broadcast"
    if ops & {"dynamic-update-slice", "dynamic-slice"} and not ops & {"exponential", "divide",
                                                                       "rsqrt", "reduce"}:
        return "dynamic slice/update"
    return "other"


def load_trace_events(trace_dir: str) -> list[dict[str, Any]]:
    """The complete events of the newest trace under ``trace_dir`` (needs ``xprof``)."""
    from xprof.convert import raw_to_tool_data  # noqa: PLC0415 - optional dependency

    paths = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True),
                   key=os.path.getmtime)
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
        "categories": {c: {"ms": per_category[c], "share": per_category[c] / total if total else 0.0}
                       for c in CATEGORIES},
        "top_ops": [{"name": name, "category": cat, "ms": ms}
                    for (name, cat), ms in per_op.most_common(10)],
    }
