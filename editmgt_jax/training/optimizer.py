"""AdamW with warmup, constant or cosine decay, gradient clipping and optional accumulation.

`optim.moments` chooses how Adam's moments are stored (`low_memory_adam`): "float32" (optax.adamw,
8 bytes per parameter), "bfloat16" (4), "int8" (blockwise 8-bit codes, about 2.03) or "factored"
(bfloat16 first moment, Adafactor-style factored second moment, about 2).
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from editmgt_jax.training import low_memory_adam

MOMENTS = ("float32", "bfloat16", "int8", "factored")


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


def scale_by_moments(cfg: Any) -> optax.GradientTransformation | None:
    """The Adam scaling for `cfg.moments` (absent: "float32"), or None for "float32" (optax.adamw
    as before, so existing configs and checkpoints keep their state structure)."""
    moments = getattr(cfg, "moments", "float32")
    b1, b2, eps = float(cfg.b1), float(cfg.b2), float(cfg.eps)
    if moments == "float32":
        return None
    if moments == "bfloat16":
        return low_memory_adam.scale_by_adam_bf16(b1, b2, eps)
    if moments == "int8":
        return low_memory_adam.scale_by_adam_int8(b1, b2, eps)
    if moments == "factored":
        return low_memory_adam.scale_by_adam_factored(b1, b2, eps)
    raise ValueError(f"optim.moments={moments!r}; expected one of {MOMENTS}")


def make_optimizer(cfg: Any, total_steps: int) -> optax.GradientTransformation:
    """The optimizer described by the `optim` config section."""
    schedule = learning_rate_schedule(cfg, total_steps)
    scale = scale_by_moments(cfg)
    if scale is None:
        adam = optax.adamw(
            schedule,
            b1=float(cfg.b1),
            b2=float(cfg.b2),
            eps=float(cfg.eps),
            weight_decay=float(cfg.weight_decay),
            mask=decay_mask,
        )
    else:  # optax.adamw's chain with another Adam scaling
        adam = optax.chain(
            scale,
            optax.add_decayed_weights(float(cfg.weight_decay), mask=decay_mask),
            optax.scale_by_learning_rate(schedule),
        )
    tx = optax.chain(
        optax.clip_by_global_norm(float(cfg.grad_clip)) if cfg.grad_clip else optax.identity(),
        adam,
    )
    if int(cfg.accumulation_steps) > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=int(cfg.accumulation_steps))
    return tx
