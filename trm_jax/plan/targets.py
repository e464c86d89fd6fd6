"""Where a plan compiles for: a TPU slice or GPU machines described without the hardware, or
this machine's own devices.

``--target`` names:

* ``v5e:2x4``, ``v4:2x2x2``, ``v5p:2x2x1``, ``v6e:4x4``, ... a TPU slice by generation and
  chip shape, as Cloud TPU names its topologies (``v5e:2x4`` is a v5e-8: 8 chips); several
  slices with ``slices``. Needs ``libtpu`` (``pip install -e ".[tpu]"``); v4 and v5p chips
  are one device each (megacore).
* ``h100:4``, ``a100:8``, ``l40s:1``, ``h100:2x8`` (2 hosts of 8): NVIDIA GPUs described by
  :mod:`trm_jax.plan.gpu_specs`. Needs jax's CUDA plugin (``pip install -e ".[cuda12]"``,
  which also brings cuDNN, needed to plan cuDNN's fused attention).
* ``local``: the devices of this machine, with the memory their runtime reports.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re

import jax

from trm_jax.plan import gpu_specs
from trm_jax.train.step_memory import GIB, device_memory_limit, quiet_native_logs

# HBM per JAX device of each TPU generation (one device per core on v2/v3, per chip from v4:
# megacore), from Cloud TPU's system architecture pages.
TPU_MEMORY_GIB: dict[str, float] = {"v2": 8, "v3": 16, "v4": 32, "v5e": 16, "v5p": 95, "v6e": 32}
_MEGACORE = ("v4",)  # generations whose chips default to two devices in libtpu's topologies

# jax's platform name for the devices of each target kind.
PLATFORMS = {"tpu": "tpu", "gpu": "gpu", "local": None}


class PlanError(ValueError):
    """A plan cannot be made as asked (one line: what was wrong and what to do)."""


@dataclasses.dataclass(frozen=True)
class Target:
    """Devices to compile for, and how much memory each has."""

    name: str  # as given: "v5e:2x4", "h100:4", "local"
    platform: str  # "tpu", "gpu" or "cpu"
    device_kind: str
    devices: tuple
    memory_bytes: int | None  # per device; None when the runtime reports no limit (CPU)
    hosts: int
    note: str = ""  # what the memory figure is

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    def describe(self) -> str:
        """One line: ``v5e:2x4: 8 x TPU v5 lite (16 GiB each), 2 hosts``."""
        memory = f"{self.memory_bytes / GIB:.1f} GiB each" if self.memory_bytes else "no memory limit reported"
        hosts = f", {self.hosts} hosts" if self.hosts > 1 else ""
        return f"{self.name}: {self.num_devices} x {self.device_kind} ({memory}){hosts}"


def resolve_target(name: str, slices: int = 1) -> Target:
    """The :class:`Target` a ``--target`` name describes; :class:`PlanError` if it cannot be made."""
    if slices < 1:
        raise PlanError(f"--slices {slices}: expected a positive number of slices")
    if name == "local":
        if slices != 1:
            raise PlanError("--slices applies to TPU targets only")
        return local_target()
    kind, sep, shape = name.partition(":")
    kind = kind.lower()
    if not sep or not shape:
        raise PlanError(
            f"--target {name!r}: expected local, a TPU slice such as v5e:2x4, or GPUs such as h100:4 ({_known_names()})"
        )
    if kind in TPU_MEMORY_GIB:
        return tpu_target(kind, shape, slices)
    if kind in gpu_specs.GPUS:
        if slices != 1:
            raise PlanError("--slices applies to TPU targets only (GPUs: give hosts as h100:2x8)")
        return gpu_target(gpu_specs.GPUS[kind], shape)
    raise PlanError(f"--target {name!r}: unknown accelerator {kind!r} ({_known_names()})")


def _known_names() -> str:
    return f"TPU generations: {', '.join(TPU_MEMORY_GIB)}; GPUs: {', '.join(gpu_specs.GPUS)}"


def local_target() -> Target:
    """This machine's devices (every process's, multi-host), with their runtime memory limit."""
    devices = jax.devices()
    return Target(
        name="local",
        platform=devices[0].platform,
        device_kind=devices[0].device_kind,
        devices=tuple(devices),
        memory_bytes=device_memory_limit(devices[0]),
        hosts=jax.process_count(),
        note="the limit the runtime reports",
    )


def tpu_target(generation: str, shape: str, slices: int) -> Target:
    """A Cloud TPU slice of ``generation`` with chips in ``shape`` (``2x4``, ``2x2x2``)."""
    if not re.fullmatch(r"\d+(x\d+){1,2}", shape):
        raise PlanError(f"--target {generation}:{shape}: expected a chip shape such as 2x4 or 2x2x1")
    if importlib.util.find_spec("libtpu") is None:
        raise PlanError(
            f"planning for a TPU needs libtpu, which is not installed: "
            f"pip install 'jax[tpu]=={jax.__version__}' (or pip install -e '.[tpu]')"
        )
    from jax.experimental import topologies  # noqa: PLC0415

    kwargs = {"chip_config_name": "megacore"} if generation in _MEGACORE else {}
    if slices > 1:
        kwargs["num_slices"] = slices
    # Compiling needs no TPU: off a TPU VM there is no metadata server to ask for the workers, and
    # several planning processes may load libtpu at once (its lockfile guards a TPU's devices).
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    try:
        with quiet_native_logs():
            topology = topologies.get_topology_desc(topology_name=f"{generation}:{shape}", platform="tpu", **kwargs)
    except Exception as err:  # noqa: BLE001 - libtpu's errors: an invalid shape, a version mismatch
        raise PlanError(
            f"--target {generation}:{shape}: libtpu cannot make this topology ({first_line(err)})"
        ) from None
    devices = tuple(topology.devices)
    name = f"{generation}:{shape}" + (f" x {slices} slices" if slices > 1 else "")
    return Target(
        name=name,
        platform="tpu",
        device_kind=devices[0].device_kind,
        devices=devices,
        memory_bytes=int(TPU_MEMORY_GIB[generation] * GIB),
        hosts=len({d.process_index for d in devices}),
        note="HBM per device",
    )


def gpu_target(spec: gpu_specs.GpuSpec, shape: str) -> Target:
    """``N`` or ``HxN`` (H hosts of N) GPUs of ``spec``."""
    match = re.fullmatch(r"(?:(\d+)x)?(\d+)", shape)
    if not match or int(match.group(2)) < 1 or int(match.group(1) or 1) < 1:
        raise PlanError(
            f"--target {spec.key}:{shape}: expected a GPU count such as {spec.key}:4, or hosts x "
            f"GPUs such as {spec.key}:2x8"
        )
    hosts, per_host = int(match.group(1) or 1), int(match.group(2))
    if importlib.util.find_spec("jax_plugins.xla_cuda12") is None:
        raise PlanError(
            f"planning for a GPU needs jax's CUDA plugin, which is not installed: pip install "
            f"'jax[cuda12]=={jax.__version__}' (or pip install -e '.[cuda12]')"
        )
    from jax.experimental import topologies  # noqa: PLC0415

    try:
        with quiet_native_logs():
            topology = topologies.get_topology_desc(
                "gpu",
                platform="cuda",
                topology=f"1x{hosts}x{per_host}",
                target_config=gpu_specs.target_config_text(spec),
            )
    except Exception as err:  # noqa: BLE001
        raise PlanError(
            f"--target {spec.key}:{shape}: jax's CUDA plugin cannot describe these GPUs ({first_line(err)})"
        ) from None
    return Target(
        name=f"{spec.key}:{shape}",
        platform="gpu",
        device_kind=spec.name,
        devices=tuple(topology.devices),
        memory_bytes=spec.memory_bytes,
        hosts=hosts,
        note="device memory",
    )


def first_line(err: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message`` of an exception, at most ``limit`` characters."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}"[:limit]
