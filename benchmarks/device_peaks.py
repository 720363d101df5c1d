"""Peak dense bf16 matmul throughput per device, for MFU (vendor datasheet figures, no sparsity).

Keyed by substrings of `jax.Device.device_kind`, most specific first: the first key contained in
the device kind wins. TPU v2/v3 devices are single TensorCores (two per chip), so their figures
are per core; from v4 on a JAX device is a whole chip.

Example:
    >>> peak_bf16_flops("NVIDIA H100 80GB HBM3")
    989000000000000.0
    >>> peak_bf16_flops("TPU v5 lite"), peak_bf16_flops("cpu")
    (197000000000000.0, None)
"""

from __future__ import annotations

PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("GH200", 989e12),
    ("H200", 989e12),
    ("H100", 989e12),
    ("H800", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("TPU v6 lite", 918e12),  # v6e (Trillium)
    ("TPU v6e", 918e12),
    ("TPU v5 lite", 197e12),  # v5e
    ("TPU v5e", 197e12),
    ("TPU v5p", 459e12),
    ("TPU v5", 459e12),  # v5p reports itself as "TPU v5"
    ("TPU v4", 275e12),
    ("TPU v3", 61.5e12),  # per core
    ("TPU v2", 22.5e12),  # per core
)


def peak_bf16_flops(device_kind: str) -> float | None:
    """Peak dense bf16 FLOP/s of one device of this kind; None when the kind is not listed."""
    for key, flops in PEAK_BF16_FLOPS:
        if key.lower() in device_kind.lower():
            return flops
    return None
