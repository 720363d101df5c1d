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
    rng: PRNGKey,
    tokens: Array,
    mask_id: int,
    min_ratio: float,
    priority: Array | None = None,
    priority_rate: float = 0.0,
) -> tuple[Array, Array, Array]:
    """Masks exactly round(r * L) random positions per sample, r from the cosine schedule.

    Args:
      rng: key.
      tokens: [B, H, W] int target tokens.
      mask_id: id written at masked positions.
      min_ratio: lower clip of the mask ratio.
      priority: optional [B, H, W] bool; in a `priority_rate` share of the samples these positions
        are masked before any other (still in random order among themselves). Sampling reveals
        the easy tokens (those an edit keeps) first and the edited ones last, so a model should
        also train on "everything else given, the edit masked".
      priority_rate: probability per sample of priority masking.
    Returns:
      (masked tokens [B, H, W], mask [B, H, W] bool, ratio [B] float32)
    """
    batch = tokens.shape[0]
    length = tokens.shape[1] * tokens.shape[2]
    ratio_key, perm_key, priority_key = jax.random.split(rng, 3)
    ratio = cosine_mask_ratio(jax.random.uniform(ratio_key, (batch,)), min_ratio)
    count = jnp.clip(jnp.round(ratio * length), 1, length).astype(jnp.int32)
    order = jax.random.uniform(perm_key, (batch, length))
    if priority is not None and priority_rate > 0:
        use = jax.random.bernoulli(priority_key, priority_rate, (batch, 1))
        # Keys in [0, 1): moving priority positions to [-1, 0) ranks them first.
        order = order - (use & priority.reshape(batch, length)).astype(order.dtype)
    # Rank of each position in a random permutation; the `count` lowest ranks are masked.
    ranks = jnp.argsort(jnp.argsort(order, axis=-1), axis=-1)
    mask = (ranks < count[:, None]).reshape(tokens.shape)
    return jnp.where(mask, mask_id, tokens), mask, ratio
