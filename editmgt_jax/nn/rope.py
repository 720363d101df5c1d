"""Flux-style rotary position embeddings: per-axis frequencies, interleaved pairs."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from editmgt_jax.common_types import Array


def grid_position_ids(height: int, width: int) -> np.ndarray:
    """Row-major ids (0, row, col) of a height x width grid: [height * width, 3] float32.

    The official pipeline derives ids from the pixel size with a rule that breaks for downsampled
    models below 1024 px; building them from the grid the transformer actually sees works for any
    (rectangular) size and equals the official ids at 1024 px.
    """
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    ids = np.stack([np.zeros_like(rows), rows, cols], axis=-1).reshape(-1, 3)
    return ids.astype(np.float32)


def rope_tables(ids: Array, axes_dims: tuple[int, ...], theta: float) -> tuple[Array, Array]:
    """cos/sin tables for position ids.

    Args:
      ids: [length, num_axes] positions (float).
      axes_dims: channels per axis (even; sums to head_dim).
      theta: base period.
    Returns:
      (cos, sin), each [length, head_dim] float32, every frequency repeated for its (even, odd)
      channel pair.
    """
    if ids.shape[-1] != len(axes_dims):
        raise ValueError(f"ids have {ids.shape[-1]} axes but axes_dims_rope has {len(axes_dims)}")
    angles = []
    for axis, dim in enumerate(axes_dims):
        # Frequencies in float64 on the host, as the official code does, then float32.
        inv_freq = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
        angles.append(ids[:, axis : axis + 1].astype(jnp.float32) * inv_freq.astype(np.float32))
    angle = jnp.concatenate(angles, axis=-1)  # [length, head_dim / 2]
    angle = jnp.repeat(angle, 2, axis=-1)
    return jnp.cos(angle), jnp.sin(angle)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
    """Rotates channel pairs (2i, 2i+1) of x [batch, length, heads, head_dim] by the tables.

    cos/sin are [length, head_dim]; computed in float32 and cast back to x's dtype.
    """
    xf = x.astype(jnp.float32)
    pairs = xf.reshape(*x.shape[:-1], -1, 2)
    rotated = jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)
    out = xf * cos[None, :, None, :] + rotated * sin[None, :, None, :]
    return out.astype(x.dtype)
