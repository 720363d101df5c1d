"""Fitting a PatchVQ's source-guided refiner (`models.source_refiner`) on (source, target) pairs.

The refiner learns to decode an edit's changed cells: from the target's codes decoded (what a
transformer that predicted them would output), the source image and the changed cells, the
target's pixels. The loss is L1 on the changed cells' pixels, plus a small cross-entropy that
teaches alpha where the target kept the source pixel (within `KEEP_LEVELS`).

Example:
    >>> import numpy as np, jax
    >>> from editmgt_jax.models.source_refiner import SourceRefiner
    >>> rng = np.random.default_rng(0)
    >>> pairs = RefinerData(*(rng.integers(0, 255, (4, 8, 8, 3), dtype=np.uint8) for _ in range(3)),
    ...                     changed=np.ones((4, 8, 8), bool))
    >>> params, losses = fit_refiner(SourceRefiner(4, 1), pairs, jax.random.key(0), steps=3,
    ...                              batch_size=2)
    >>> len(losses)
    3
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from editmgt_jax.common_types import PRNGKey
from editmgt_jax.models.source_refiner import ALPHA_OFFSET, SourceRefiner, compose

KEEP_LEVELS = 2  # a target pixel within this many uint8 levels of the source's is "kept"
ALPHA_LOSS_WEIGHT = 0.05


@dataclasses.dataclass
class RefinerData:
    """Training pairs: uint8 [N, H, W, 3] decoded target codes, sources and targets, and the
    changed cells' pixels, bool [N, H, W]."""

    decoded: np.ndarray
    source: np.ndarray
    target: np.ndarray
    changed: np.ndarray


def refiner_loss(params, model: SourceRefiner, decoded, source, target, changed) -> jax.Array:
    """Mean L1 over changed pixels + ALPHA_LOSS_WEIGHT x the alpha cross-entropy there.
    Images float [B, H, W, 3] in [0, 1]; changed bool [B, H, W]."""
    alpha_logit, delta = model.apply(params, decoded, source, changed, method=model.heads)
    out = compose(decoded, source, changed, alpha_logit, delta)
    weight = changed.astype(jnp.float32)
    count = jnp.maximum(jnp.sum(weight), 1.0)
    l1 = jnp.sum(jnp.abs(out - target) * weight[..., None]) / (3.0 * count)
    kept = jnp.all(jnp.abs(target - source) <= KEEP_LEVELS / 255.0, axis=-1)
    bce = optax.sigmoid_binary_cross_entropy(alpha_logit + ALPHA_OFFSET, kept.astype(jnp.float32))
    return l1 + ALPHA_LOSS_WEIGHT * jnp.sum(bce * weight) / count


def fit_refiner(
    model: SourceRefiner,
    data: RefinerData,
    key: PRNGKey,
    steps: int,
    batch_size: int = 32,
    learning_rate: float = 2e-3,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[dict, list[float]]:
    """Adam with warm-up and cosine decay on random batches of `data`.
    Returns (params {"params": ...}, loss per step)."""
    n = data.decoded.shape[0]
    if n < 1 or steps < 1:
        raise ValueError(f"need at least one pair and one step, got {n} pairs, {steps} steps")
    as_float = lambda x: jnp.asarray(x, jnp.float32) / 255.0
    init_key, batch_key = jax.random.split(key)
    params = model.init(
        init_key, as_float(data.decoded[:1]), as_float(data.source[:1]), data.changed[:1]
    )
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, min(100, max(steps // 10, 1)), steps
    )
    tx = optax.adam(schedule)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, decoded, source, target, changed):
        loss, grads = jax.value_and_grad(refiner_loss)(
            params, model, as_float(decoded), as_float(source), as_float(target), changed
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(np.asarray(jax.random.key_data(batch_key)).ravel()[-1])
    losses = []
    for i in range(steps):
        idx = rng.integers(0, n, batch_size)
        params, opt_state, loss = step(
            params, opt_state, data.decoded[idx], data.source[idx], data.target[idx],
            data.changed[idx],
        )  # fmt: skip
        losses.append(float(loss))
        if progress is not None:
            progress(i, losses[-1])
    return jax.device_get(params), losses
