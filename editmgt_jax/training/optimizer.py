"""AdamW with warmup, constant or cosine decay, gradient clipping and optional accumulation."""

from __future__ import annotations

from typing import Any

import jax
import optax


def learning_rate_schedule(cfg: Any, total_steps: int) -> optax.Schedule:
    """Linear warmup to `cfg.learning_rate`, then constant or cosine decay to `end_lr_ratio`."""
    warmup = int(cfg.warmup_steps)
    peak = float(cfg.learning_rate)
    if cfg.decay == "constant":
        after = optax.constant_schedule(peak)
    elif cfg.decay == "cosine":
        after = optax.cosine_decay_schedule(
            peak, max(total_steps - warmup, 1), alpha=float(cfg.end_lr_ratio)
        )
    else:
        raise ValueError(f"optim.decay={cfg.decay!r}; expected 'constant' or 'cosine'")
    if warmup <= 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def decay_mask(params: Any) -> Any:
    """Weight decay on matrices and convolution kernels only (not biases, norm gains)."""
    return jax.tree.map(lambda x: x.ndim >= 2, params)


def make_optimizer(cfg: Any, total_steps: int) -> optax.GradientTransformation:
    """The optimizer described by the `optim` config section."""
    tx = optax.chain(
        optax.clip_by_global_norm(float(cfg.grad_clip)) if cfg.grad_clip else optax.identity(),
        optax.adamw(
            learning_rate_schedule(cfg, total_steps),
            b1=float(cfg.b1),
            b2=float(cfg.b2),
            eps=float(cfg.eps),
            weight_decay=float(cfg.weight_decay),
            mask=decay_mask,
        ),
    )
    if int(cfg.accumulation_steps) > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=int(cfg.accumulation_steps))
    return tx
