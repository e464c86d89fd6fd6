"""Descriptions of NVIDIA GPUs for compiling ahead of time without one.

XLA's GPU compiler takes the target device as a ``GpuTargetConfigProto`` (text format): the
figures it sizes kernels and its memory plan by. These are the datasheet figures of the GPUs
the paper and our users train on; :func:`target_config_text` writes the proto for one.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class GpuSpec:
    """One GPU model: what XLA's compiler needs to know about it."""

    key: str  # the name used in ``--target KEY:N``
    name: str  # the device name the driver reports
    compute_capability: tuple[int, int]
    sm_count: int
    memory_bytes: int  # usable device memory as the driver reports it
    memory_bandwidth: int  # bytes/s
    l2_cache_bytes: int
    clock_ghz: float
    fp32_units_per_sm: int
    shared_memory_per_sm: int
    shared_memory_per_block_optin: int
    threads_per_sm: int


GPUS: dict[str, GpuSpec] = {
    spec.key: spec
    for spec in (
        # The paper's ARC hardware (4 x H100). SXM5, 80 GB HBM3.
        GpuSpec(
            "h100",
            "NVIDIA H100 80GB HBM3",
            (9, 0),
            sm_count=132,
            memory_bytes=84_942_979_072,
            memory_bandwidth=3_352_320_000_000,
            l2_cache_bytes=50 * 2**20,
            clock_ghz=1.98,
            fp32_units_per_sm=128,
            shared_memory_per_sm=228 * 1024,
            shared_memory_per_block_optin=227 * 1024,
            threads_per_sm=2048,
        ),
        # SXM4, 80 GB HBM2e.
        GpuSpec(
            "a100",
            "NVIDIA A100-SXM4-80GB",
            (8, 0),
            sm_count=108,
            memory_bytes=85_100_068_864,
            memory_bandwidth=2_039_040_000_000,
            l2_cache_bytes=40 * 2**20,
            clock_ghz=1.41,
            fp32_units_per_sm=64,
            shared_memory_per_sm=164 * 1024,
            shared_memory_per_block_optin=163 * 1024,
            threads_per_sm=2048,
        ),
        # The paper's Sudoku hardware (one L40S) and its maze hardware (4 x L40S). Ada, 48 GB GDDR6.
        GpuSpec(
            "l40s",
            "NVIDIA L40S",
            (8, 9),
            sm_count=142,
            memory_bytes=48_305_799_168,
            memory_bandwidth=864_000_000_000,
            l2_cache_bytes=96 * 2**20,
            clock_ghz=2.52,
            fp32_units_per_sm=128,
            shared_memory_per_sm=100 * 1024,
            shared_memory_per_block_optin=99 * 1024,
            threads_per_sm=1536,
        ),
    )
}

# cuDNN version assumed by the compiler: the one jax[cuda12] installs (>= 9.8).
_DNN_VERSION = (9, 8, 0)


def target_config_text(spec: GpuSpec) -> str:
    """The ``stream_executor.GpuTargetConfigProto`` of ``spec``, in protobuf text format."""
    major, minor = spec.compute_capability
    info = {
        "threads_per_block_limit": 1024,
        "threads_per_warp": 32,
        "shared_memory_per_block": 48 * 1024,
        "shared_memory_per_core": spec.shared_memory_per_sm,
        "threads_per_core_limit": spec.threads_per_sm,
        "core_count": spec.sm_count,
        "fpus_per_core": spec.fp32_units_per_sm,
        "block_dim_limit_x": 2**31 - 1,
        "block_dim_limit_y": 65535,
        "block_dim_limit_z": 65535,
        "memory_bandwidth": spec.memory_bandwidth,
        "l2_cache_size": spec.l2_cache_bytes,
        "clock_rate_ghz": spec.clock_ghz,
        "device_memory_size": spec.memory_bytes,
        "shared_memory_per_block_optin": spec.shared_memory_per_block_optin,
        "registers_per_core_limit": 65536,
        "registers_per_block_limit": 65536,
    }
    lines = ["gpu_device_info {"]
    lines += [f"  {key}: {value}" for key, value in info.items()]
    lines += [
        f"  cuda_compute_capability {{ major: {major} minor: {minor} }}",
        "}",
        'platform_name: "CUDA"',
        "dnn_version_info {{ major: {} minor: {} patch: {} }}".format(*_DNN_VERSION),
        f'device_description_str: "{spec.name}"',
    ]
    return "\n".join(lines) + "\n"
