"""LoRA: low-rank adapters on chosen kernels; only the adapters train, and they merge on export.

For a target kernel W [in, out] the adapter is a [in, r] (random) and b [r, out] (zeros), and the
model runs with W + (alpha / r) * a @ b. With scanned layers (`scan_layers`) a kernel is a stack
[layers, in, out] and so are its adapters: a [layers, in, r], b [layers, r, out]. Adapters live in a tree that mirrors the parameters:
`<kernel path>/lora_a`, `<kernel path>/lora_b`. Parameter sharding carries over: a takes the
kernel's input axis name, b its output axis name.

Example:
    >>> import numpy as np, jax
    >>> params = {"attn": {"to_q": {"kernel": np.ones((4, 6), np.float32)}}}
    >>> lora = init_lora(jax.random.key(0), params, rank=2, targets=("attn/to_q",))
    >>> lora["attn"]["to_q"]["kernel"]["lora_a"].shape, lora["attn"]["to_q"]["kernel"]["lora_b"].shape
    ((4, 2), (2, 6))
    >>> bool((merge(params, lora, scale=8.0)["attn"]["to_q"]["kernel"] == 1).all())  # b starts at 0
    True
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from editmgt_jax.checkpoint.convert.table import flatten, unflatten

# Default targets: the attention projections of every block (image and text streams).
DEFAULT_TARGETS = (r"attn/(to_q|to_k|to_v|to_out|add_q_proj|add_k_proj|add_v_proj|to_add_out)",)


def _is_target(path: str, targets: Sequence[str]) -> bool:
    return path.endswith("/kernel") and any(re.search(t, path) for t in targets)


def _value(x):
    return x.value if isinstance(x, nn.LogicallyPartitioned) else x


def init_lora(rng: jax.Array, params: Any, rank: int, targets: Sequence[str]) -> dict[str, Any]:
    """Adapters for every 2-D kernel (or stack of them, [layers, in, out]) whose path matches
    one of the `targets` regexes.

    Works on plain or logically partitioned (boxed) params; boxed kernels give boxed adapters.
    """
    if rank < 1:
        raise ValueError(f"lora rank {rank}; expected >= 1")
    flat = {p: v for p, v in flatten(params).items() if _is_target(p, targets)}
    flat = {p: v for p, v in flat.items() if _value(v).ndim in (2, 3)}
    if not flat:
        raise ValueError(f"No 2-D kernel matches the LoRA targets {list(targets)}")
    out = {}
    for i, (path, kernel) in enumerate(sorted(flat.items())):
        *stack, fan_in, fan_out = _value(kernel).shape
        key = jax.random.fold_in(rng, i)
        a = jax.random.normal(key, (*stack, fan_in, rank), jnp.float32) / rank
        b = jnp.zeros((*stack, rank, fan_out), jnp.float32)
        if isinstance(kernel, nn.LogicallyPartitioned):
            *layers, names_in, names_out = tuple(kernel.names)
            a = nn.LogicallyPartitioned(a, (*layers, names_in, None), mesh=kernel.mesh)
            b = nn.LogicallyPartitioned(b, (*layers, None, names_out), mesh=kernel.mesh)
        out[f"{path}/lora_a"], out[f"{path}/lora_b"] = a, b
    return unflatten(out)


def merge(params: Any, lora: Any, scale: float) -> Any:
    """params with W + scale * a @ b for every adapted kernel (same tree structure as params)."""
    flat, adapters = flatten(params), flatten(lora)
    for path, value in adapters.items():
        if not path.endswith("/lora_a"):
            continue
        kernel_path = path[: -len("/lora_a")]
        if kernel_path not in flat:
            raise KeyError(f"LoRA adapter for {kernel_path!r}, which the parameters do not have")
        b = adapters[f"{kernel_path}/lora_b"]
        w = flat[kernel_path]
        flat[kernel_path] = (w + scale * (value @ b)).astype(w.dtype)  # @ batches a stack
    return unflatten(flat)
