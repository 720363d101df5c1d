"""Between the unscanned (`name_{i}/...`) and scanned (`name/...`, leading 'layers' axis) layouts."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

STACKS = ("transformer_blocks", "single_transformer_blocks")


def _stack_names(params: dict[str, Any], stack: str) -> list[str]:
    names = [k for k in params if k.startswith(stack + "_") and k[len(stack) + 1 :].isdigit()]
    names.sort(key=lambda k: int(k[len(stack) + 1 :]))
    if [int(k[len(stack) + 1 :]) for k in names] != list(range(len(names))):
        raise ValueError(f"{stack} layers are not numbered 0..n-1: {names}")
    return names


def _tree_stack(trees: list[Any]) -> Any:
    if isinstance(trees[0], dict):
        return {k: _tree_stack([t[k] for t in trees]) for k in trees[0]}
    xp = np if isinstance(trees[0], np.ndarray) else jnp
    return xp.stack(trees)


def _tree_index(tree: Any, i: int) -> Any:
    if isinstance(tree, dict):
        return {k: _tree_index(v, i) for k, v in tree.items()}
    return tree[i]


def scan_params(params: dict[str, Any]) -> dict[str, Any]:
    """Unscanned -> scanned: `transformer_blocks_{i}` subtrees stacked into `transformer_blocks`."""
    out = dict(params)
    for stack in STACKS:
        names = _stack_names(out, stack)
        if names:
            out[stack] = _tree_stack([out.pop(n) for n in names])
    return out


def unscan_params(params: dict[str, Any]) -> dict[str, Any]:
    """Scanned -> unscanned: the inverse of `scan_params`."""
    out = dict(params)
    for stack in STACKS:
        if stack in out:
            stacked = out.pop(stack)
            count = len(next(iter(_leaves(stacked))))
            for i in range(count):
                out[f"{stack}_{i}"] = _tree_index(stacked, i)
    return out


def _leaves(tree: Any):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _leaves(v)
    else:
        yield tree
