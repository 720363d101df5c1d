"""TPU chips and slice topologies for ahead-of-time compiles on a host without a TPU.

`parse_topology("v5e:2x4")` -> a `Topology` (chip spec + chip grid); `topology_devices(t)` -> the
compile-only TPU devices of that slice, from libtpu's compiler (`pip install "editmgt-jax[tpu]"`,
i.e. `jax[tpu]`), via `jax.experimental.topologies.get_topology_desc`. Nothing runs on them: they
exist so that `jax.jit(...).lower(...).compile()` targets that slice.

Chip figures are the vendor's public datasheets (Google Cloud TPU docs), per chip:

- v4:  https://cloud.google.com/tpu/docs/v4  (275 TFLOP/s bf16, 32 GiB HBM2 at 1200 GB/s; two
  TensorCores per chip, and the compile-only topology gives one device per TensorCore). ICI: the
  "TPU versions" table's 2400 Gbps per direction, 600 GB/s both ways.
- v5e: https://cloud.google.com/tpu/docs/v5e  (197 TFLOP/s, 16 GiB HBM2 at 819 GB/s, 400 GB/s
  bidirectional ICI per chip).
- v5p: https://cloud.google.com/tpu/docs/v5p  (459 TFLOP/s, 95 GiB HBM2e at 2765 GB/s, 1200 GB/s
  bidirectional ICI per chip).
- v6e: https://cloud.google.com/tpu/docs/v6e  (918 TFLOP/s, 32 GB HBM at 1638 GB/s, 800 GB/s
  bidirectional ICI per chip).

Example:
    >>> t = parse_topology("v5e:2x4")
    >>> t.chips, t.chip.name, t.chips_per_host_bounds
    (8, 'v5e', (2, 2, 1))
    >>> parse_topology("v5e:1x1").chips_per_host_bounds  # the 2x2x1 host would not divide it
    (1, 1, 1)
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
    """One TPU generation, per chip.

    Attributes:
        name: the topology prefix ("v5e").
        device_kind: what `jax.Device.device_kind` says for it.
        hbm_bytes: HBM capacity.
        peak_bf16_flops: dense bf16 matmul peak, FLOP/s.
        hbm_bytes_per_s: HBM bandwidth.
        ici_bytes_per_s: inter-chip interconnect bandwidth, both directions, all links.
        chips_per_host_bounds: chips per host as (x, y, z), libtpu's default host shape.
        axes: 2 (2D torus: "AxB") or 3 (3D: "AxBxC").
        cores_per_chip: compile-only devices per chip (v4: one per TensorCore).
    """

    name: str
    device_kind: str
    hbm_bytes: int
    peak_bf16_flops: float
    hbm_bytes_per_s: float
    ici_bytes_per_s: float
    chips_per_host_bounds: tuple[int, int, int]
    axes: int
    cores_per_chip: int = 1


CHIPS: dict[str, Chip] = {
    "v4": Chip("v4", "TPU v4", 32 * GIB, 275e12, 1200e9, 600e9, (2, 2, 1), 3, cores_per_chip=2),
    "v5e": Chip("v5e", "TPU v5 lite", 16 * GIB, 197e12, 819e9, 400e9, (2, 2, 1), 2),
    "v5p": Chip("v5p", "TPU v5", 95 * GIB, 459e12, 2765e9, 1200e9, (2, 2, 1), 3),
    # "32 GB" in the datasheet; taken as 10^9 bytes (the smaller reading: a plan that fits it fits).
    "v6e": Chip("v6e", "TPU v6 lite", 32 * 10**9, 918e12, 1638e9, 800e9, (2, 2, 1), 2),
}


class TopologyError(ValueError):
    """An unknown chip or a malformed topology name."""


@dataclasses.dataclass(frozen=True)
class Topology:
    """A slice: `chip` x `shape` (chips along each torus axis)."""

    name: str
    chip: Chip
    shape: tuple[int, ...]

    @property
    def chips(self) -> int:
        return math.prod(self.shape)

    @property
    def devices(self) -> int:
        return self.chips * self.chip.cores_per_chip

    @property
    def hbm_bytes_per_device(self) -> int:
        return self.chip.hbm_bytes // self.chip.cores_per_chip

    @property
    def peak_flops_per_device(self) -> float:
        return self.chip.peak_bf16_flops / self.chip.cores_per_chip

    @property
    def chips_per_host_bounds(self) -> tuple[int, int, int]:
        """The chip's default host shape where it divides the slice; a slice smaller than a host
        along an axis (v5e:1x1, v5e:2x1) is one host of its own shape along that axis."""
        shape = tuple(self.shape) + (1,) * (3 - len(self.shape))
        bounds = self.chip.chips_per_host_bounds
        return tuple(b if s % b == 0 else s for s, b in zip(shape, bounds, strict=True))


def parse_topology(name: str) -> Topology:
    """ "v5e:4x4", "v5p:2x2x1" -> `Topology`; `TopologyError` naming the bad part otherwise."""
    match = re.fullmatch(r"\s*(v\w+):(\d+(?:x\d+)*)\s*", str(name))
    if not match:
        raise TopologyError(
            f"topology {name!r} is not CHIP:AxB[xC] (e.g. v5e:2x4, v5p:2x2x1); chips: "
            f"{', '.join(CHIPS)}"
        )
    chip_name, dims = match.group(1).lower(), match.group(2)
    if chip_name not in CHIPS:
        raise TopologyError(
            f"unknown TPU chip {chip_name!r} in topology {name!r}; known: {', '.join(CHIPS)}"
        )
    chip = CHIPS[chip_name]
    shape = tuple(int(d) for d in dims.split("x"))
    if len(shape) != chip.axes or min(shape) < 1:
        example = "x".join(["2"] * chip.axes)
        raise TopologyError(
            f"topology {name!r}: {chip_name} slices have {chip.axes} positive axes "
            f"(e.g. {chip_name}:{example}), got {dims!r}"
        )
    return Topology(f"{chip_name}:{dims}", chip, shape)


def libtpu_available() -> bool:
    """Whether the TPU compiler (libtpu, from `jax[tpu]`) is installed."""
    import importlib.util

    return importlib.util.find_spec("libtpu") is not None


def prepare_environment() -> None:
    """Environment for a compile-only TPU client on a host that may have no TPU.

    Call it before JAX starts any backend. Without a TPU, libtpu looks for a metadata server and
    prints hostname warnings; these values (set only where unset) stop both. JAX_PLATFORMS=cpu
    keeps the process off any local TPU (another job may hold it; compiling needs none), and
    ALLOW_MULTIPLE_LIBTPU_LOAD lets it load libtpu while another process holds
    /tmp/libtpu_lockfile (any JAX process started without JAX_PLATFORMS=cpu takes it once libtpu
    is installed; two test workers compiling at once would otherwise fail with "ABORTED").
    """
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-8")


def topology_devices(topology: Topology) -> list:
    """The slice's compile-only TPU devices, in libtpu's order (`TopologyError` without libtpu)."""
    if not libtpu_available():
        raise TopologyError(
            "compiling for a TPU topology needs libtpu: pip install 'editmgt-jax[tpu]' "
            "(jax[tpu] of the installed jax version)"
        )
    prepare_environment()
    from jax.experimental import topologies

    desc = topologies.get_topology_desc(
        topology_name=topology.name,
        platform="tpu",
        chips_per_host_bounds=topology.chips_per_host_bounds,
    )
    devices = list(desc.devices)
    if len(devices) != topology.devices:
        raise TopologyError(
            f"libtpu made {len(devices)} devices for {topology.name}, expected {topology.devices}"
        )
    return devices
