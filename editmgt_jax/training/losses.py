"""Cross-entropy on masked tokens, and its metrics."""

from __future__ import annotations

import jax.numpy as jnp
import optax

from editmgt_jax.common_types import Array


def masked_token_loss(logits: Array, targets: Array, mask: Array) -> tuple[Array, dict[str, Array]]:
    """Mean cross-entropy over masked positions.

    Args:
      logits: [B, H, W, codebook] (computed in float32).
      targets: [B, H, W] int code ids.
      mask: [B, H, W] bool, True where the input was masked.
    Returns:
      (loss, metrics with loss, masked-token accuracy and mask rate)
    """
    logits = logits.astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    weights = mask.astype(jnp.float32)
    count = jnp.maximum(jnp.sum(weights), 1.0)
    loss = jnp.sum(ce * weights) / count
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    metrics = dict(
        loss=loss,
        masked_accuracy=jnp.sum(correct * weights) / count,
        mask_rate=jnp.mean(weights),
    )
    return loss, metrics
