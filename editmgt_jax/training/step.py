"""One masked-token training step for EditMGT, and its sharded jit.

A batch is a dict of arrays:
  target_tokens [B, H, W] int32   the edited image's tokens (what is masked and predicted)
  source_tokens [B, H, W] int32   the source image's tokens (always given, attention injection)
  text_states   [B, T, D] float   instruction states from the frozen text encoder
  pooled        [B, P]    float   pooled instruction embedding
  micro_conds   [B, 5]    float   (width, height, crop_top, crop_left, aesthetic)
The empty-instruction states (`uncond_states` [T, D], `uncond_pooled` [P]) replace a sample's text
with probability `cond_dropout`, which is what classifier-free guidance needs at sampling time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from editmgt_jax.common_types import Array
from editmgt_jax.training.lora import merge
from editmgt_jax.training.losses import attention_supervision_loss, masked_token_loss, pool_cells
from editmgt_jax.training.masking import mask_tokens, training_timestep
from editmgt_jax.training.train_state import TrainState

BATCH_KEYS = ("target_tokens", "source_tokens", "text_states", "pooled", "micro_conds")


@dataclasses.dataclass(frozen=True)
class StepOptions:
    mask_id: int
    min_mask_ratio: float = 0.0
    cond_dropout: float = 0.1
    ema_decay: float = 0.999
    timestep_convention: str = "mask_ratio"
    lora_scale: float = 0.0  # alpha / rank when the state trains LoRA adapters
    # Edit-focused training (all off by default). "Changed" tokens are those where the target's id
    # differs from the source's: with a local tokenizer, exactly the cells the edit changes.
    changed_loss_weight: float = 1.0  # weight of masked changed tokens in the loss (others: 1)
    changed_loss_per_example: bool = False  # ... as a per-example mean (losses.masked_token_loss)
    changed_mask_rate: float = 0.0  # share of samples whose changed tokens are masked first
    attention_loss_weight: float = 0.0  # weight of `attention_supervision_loss`
    attention_blocks: tuple[int, ...] = ()  # blocks whose consolidated attention it supervises
    attention_max_fraction: float = 0.5  # samples editing more of the image are left out
    token_stride: int = 1  # transformer downsample factor (VQ cells per attention cell side)

    @property
    def uses_changed(self) -> bool:
        return (
            self.changed_loss_weight != 1.0
            or self.changed_loss_per_example
            or self.changed_mask_rate > 0
            or self.attention_loss_weight > 0
        )


def drop_conditions(rng, text_states, pooled, uncond_states, uncond_pooled, rate: float):
    """Per sample, with probability `rate`, replaces the instruction by the empty one."""
    drop = jax.random.bernoulli(rng, rate, (text_states.shape[0],))
    text_states = jnp.where(
        drop[:, None, None], uncond_states[None].astype(text_states.dtype), text_states
    )
    pooled = jnp.where(drop[:, None], uncond_pooled[None].astype(pooled.dtype), pooled)
    return text_states, pooled


def _all_finite(tree) -> Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def make_train_step(
    model: nn.Module, options: StepOptions
) -> Callable[[TrainState, dict[str, Array], Array, Array, Array], tuple[TrainState, dict]]:
    """Returns step(state, batch, uncond_states, uncond_pooled, rng) -> (state, metrics).

    A step whose loss or gradients are not finite leaves params, optimizer state and EMA unchanged,
    increments `skipped_steps` and `consecutive_skips` (reset by the next good step) and reports
    `nonfinite=1` in its metrics.
    """

    def step(state: TrainState, batch, uncond_states, uncond_pooled, rng):
        missing = [k for k in BATCH_KEYS if k not in batch]
        if missing:
            raise KeyError(f"batch lacks {missing}; expected keys {BATCH_KEYS}")
        mask_rng, drop_rng = jax.random.split(jax.random.fold_in(rng, state.step))
        changed = None
        if options.uses_changed:
            changed = batch["target_tokens"] != batch["source_tokens"]
        inputs, mask, ratio = mask_tokens(
            mask_rng,
            batch["target_tokens"],
            options.mask_id,
            options.min_mask_ratio,
            priority=changed,
            priority_rate=options.changed_mask_rate,
        )
        text_states, pooled = drop_conditions(
            drop_rng,
            batch["text_states"],
            batch["pooled"],
            uncond_states,
            uncond_pooled,
            options.cond_dropout,
        )

        def loss_fn(params):
            if state.frozen_params is not None:
                params = merge(state.frozen_params, params, options.lora_scale)
            supervise = options.attention_loss_weight > 0
            out = model.apply(
                {"params": params},
                inputs,
                text_states,
                pooled,
                batch["micro_conds"],
                training_timestep(ratio, options.timestep_convention),
                source_tokens=batch["source_tokens"],
                capture_blocks=options.attention_blocks if supervise else (),
                capture_reduce=supervise,
            )
            logits = out[0] if supervise else out
            loss, metrics = masked_token_loss(
                logits,
                batch["target_tokens"],
                mask,
                changed,
                options.changed_loss_weight,
                per_example=options.changed_loss_per_example,
            )
            if supervise:
                cells = pool_cells(changed, options.token_stride).reshape(changed.shape[0], -1)
                attention_loss, attention_metrics = attention_supervision_loss(
                    out[1], cells, options.attention_max_fraction
                )
                loss = loss + options.attention_loss_weight * attention_loss
                metrics = dict(metrics, **attention_metrics, token_loss=metrics["loss"], loss=loss)
            return loss, metrics

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        finite = jnp.isfinite(loss) & _all_finite(grads)
        # EMA warm-up: early on the average must not be dominated by the initial weights.
        count = state.step.astype(jnp.float32)
        decay = jnp.minimum(options.ema_decay, (1.0 + count) / (10.0 + count))

        def update(operands):
            params, opt_state, ema_params, grads = operands
            updates, new_opt = state.tx.update(grads, opt_state, params)
            new_params = optax.apply_updates(params, updates)
            new_ema = None  # a state without EMA (train.ema_decay 0) keeps none
            if ema_params is not None:
                new_ema = jax.tree.map(
                    lambda e, p: decay * e + (1.0 - decay) * p, ema_params, new_params
                )
            return new_params, new_opt, new_ema

        def skip(operands):
            params, opt_state, ema_params, _ = operands
            return params, opt_state, ema_params

        # A branch, not a select per leaf: the same result, and XLA:CPU compiles the step in about
        # half the time (a select on every parameter, moment and EMA leaf against one global
        # reduction doubled it).
        new_params, new_opt, new_ema = jax.lax.cond(
            finite, update, skip, (state.params, state.opt_state, state.ema_params, grads)
        )
        skipped = (~finite).astype(jnp.int32)
        state = state.replace(
            step=state.step + (1 - skipped),
            params=new_params,
            opt_state=new_opt,
            ema_params=new_ema,
            skipped_steps=state.skipped_steps + skipped,
            consecutive_skips=jnp.where(finite, 0, state.consecutive_skips + 1),
        )
        grad_norm = jnp.where(finite, optax.global_norm(grads), 0.0)  # 0 on a skipped step
        metrics = dict(metrics, grad_norm=grad_norm, nonfinite=skipped)
        return state, metrics

    return step


def jit_train_step(step, state_shardings, batch_sharding, replicated):
    """jit with explicit in/out shardings; the state is donated (updated in place)."""
    return jax.jit(
        step,
        in_shardings=(state_shardings, batch_sharding, replicated, replicated, replicated),
        out_shardings=(state_shardings, replicated),
        donate_argnums=(0,),
    )
