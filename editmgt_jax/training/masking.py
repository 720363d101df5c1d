"""Masking target tokens for masked-token training (MaskGIT / Meissonic style)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from editmgt_jax.common_types import Array, PRNGKey


def cosine_mask_ratio(u: Array, min_ratio: float) -> Array:
    """r = cos(pi/2 * u), u in [0, 1), clipped below at `min_ratio`."""
    return jnp.clip(jnp.cos(jnp.pi / 2 * u), min_ratio, 1.0)


def training_timestep(ratio: Array, convention: str) -> Array:
    """The `timestep` the transformer sees for a mask ratio.

    `official`: the official trainer passed ratio x 1000 (the forward multiplies by 1000 again);
    `mask_ratio`: ours passes the ratio itself, the same quantity the sampler passes.
    """
    if convention == "official":
        return ratio * 1000.0
    if convention == "mask_ratio":
        return ratio
    raise ValueError(f"Unknown timestep_convention {convention!r}")


def mask_tokens(
    rng: PRNGKey, tokens: Array, mask_id: int, min_ratio: float
) -> tuple[Array, Array, Array]:
    """Masks exactly round(r * L) random positions per sample, r from the cosine schedule.

    Args:
      rng: key.
      tokens: [B, H, W] int target tokens.
      mask_id: id written at masked positions.
      min_ratio: lower clip of the mask ratio.
    Returns:
      (masked tokens [B, H, W], mask [B, H, W] bool, ratio [B] float32)
    """
    batch = tokens.shape[0]
    length = tokens.shape[1] * tokens.shape[2]
    ratio_key, perm_key = jax.random.split(rng)
    ratio = cosine_mask_ratio(jax.random.uniform(ratio_key, (batch,)), min_ratio)
    count = jnp.clip(jnp.round(ratio * length), 1, length).astype(jnp.int32)
    # Rank of each position in a random permutation; the `count` lowest ranks are masked.
    ranks = jnp.argsort(
        jnp.argsort(jax.random.uniform(perm_key, (batch, length)), axis=-1), axis=-1
    )
    mask = (ranks < count[:, None]).reshape(tokens.shape)
    return jnp.where(mask, mask_id, tokens), mask, ratio
