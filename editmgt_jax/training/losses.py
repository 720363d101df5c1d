"""Training losses: cross-entropy on masked tokens (optionally weighted toward the tokens an edit
changes), and the attention-supervision loss that teaches the model where an edit happens."""

from __future__ import annotations

import jax.numpy as jnp
import optax

from editmgt_jax.common_types import Array


def masked_token_loss(
    logits: Array,
    targets: Array,
    mask: Array,
    changed: Array | None = None,
    changed_weight=1.0,
    per_example: bool = False,
) -> tuple[Array, dict[str, Array]]:
    """Weighted mean cross-entropy over masked positions.

    Args:
      logits: [B, H, W, codebook] (computed in float32).
      targets: [B, H, W] int code ids.
      mask: [B, H, W] bool, True where the input was masked.
      changed: optional [B, H, W] bool, True where the target differs from the source; those
        masked positions weigh `changed_weight` in the mean (the rest weigh 1). An edit changes few
        tokens, and copying the source is easy: the weight spends the gradient on the edit.
      per_example: instead, the loss is the plain mean over masked positions plus
        `changed_weight` x the mean over samples of each sample's mean over its masked changed
        positions. A new background or a style changes ~90% of the tokens and a recoloured shape
        ~3%: weighted per token, the global edits take most of the edit gradient; per example,
        every edit counts the same.
    Returns:
      (loss, metrics with loss, masked-token accuracy and mask rate; with `changed`, also the
      accuracy on masked changed / unchanged tokens)
    """
    logits = logits.astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    masked = mask.astype(jnp.float32)
    if per_example and changed is not None:
        edit = masked * changed
        axes = tuple(range(1, edit.ndim))
        count = jnp.sum(edit, axis=axes)
        per_sample = jnp.sum(ce * edit, axis=axes) / jnp.maximum(count, 1.0)
        has_edit = (count > 0).astype(jnp.float32)
        edit_loss = jnp.sum(per_sample * has_edit) / jnp.maximum(jnp.sum(has_edit), 1.0)
        plain = jnp.sum(ce * masked) / jnp.maximum(jnp.sum(masked), 1e-6)
        loss = plain + changed_weight * edit_loss
    else:
        weights = masked if changed is None else masked * (1.0 + (changed_weight - 1.0) * changed)
        loss = jnp.sum(ce * weights) / jnp.maximum(jnp.sum(weights), 1e-6)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)

    def accuracy(where):
        return jnp.sum(correct * where) / jnp.maximum(jnp.sum(where), 1.0)

    metrics = dict(loss=loss, masked_accuracy=accuracy(masked), mask_rate=jnp.mean(masked))
    if changed is not None:
        changed = changed.astype(jnp.float32)
        metrics.update(
            changed_accuracy=accuracy(masked * changed),
            unchanged_accuracy=accuracy(masked * (1.0 - changed)),
            changed_rate=jnp.mean(changed),
        )
    return loss, metrics


def pool_cells(cells: Array, factor: int) -> Array:
    """[B, H, W] bool -> [B, H/f, W/f] bool: a coarse cell is set when any of its cells is."""
    if factor == 1:
        return cells
    b, h, w = cells.shape
    return cells.reshape(b, h // factor, factor, w // factor, factor).any(axis=(2, 4))


def attention_supervision_loss(
    scores: Array, edit_cells: Array, max_fraction: float = 0.5, eps: float = 1e-8
) -> tuple[Array, dict[str, Array]]:
    """KL(edit map || attention map) per sample, averaged over samples with a local edit.

    Both maps are normalised to sum to 1 over the image positions: the target is uniform over the
    edited cells, the prediction is the consolidated text->image attention that region-hold reads.
    Samples whose edit covers no cell or more than `max_fraction` of them (a new background, a
    style) carry no localisation to learn and are left out.

    Args:
      scores: [B, N] float, attention mass of each image position (mean over blocks, heads and
        text tokens).
      edit_cells: [B, N] bool, positions the edit changes.
    Returns:
      (loss, metrics with the loss and the fraction of samples it covered)
    """
    cells = edit_cells.astype(jnp.float32)
    fraction = jnp.mean(cells, axis=-1)
    valid = ((fraction > 0) & (fraction <= max_fraction)).astype(jnp.float32)
    target = cells / jnp.maximum(jnp.sum(cells, axis=-1, keepdims=True), 1.0)
    scores = scores.astype(jnp.float32)
    predicted = scores / jnp.maximum(jnp.sum(scores, axis=-1, keepdims=True), eps)
    kl = jnp.sum(
        jnp.where(
            cells > 0, target * (jnp.log(jnp.maximum(target, eps)) - jnp.log(predicted + eps)), 0.0
        ),
        axis=-1,
    )
    loss = jnp.sum(kl * valid) / jnp.maximum(jnp.sum(valid), 1.0)
    return loss, dict(attention_loss=loss, attention_supervised=jnp.mean(valid))
