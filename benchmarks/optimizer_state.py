"""Optimizer-state memory and training loss for each `optim.moments` choice.

    python -m benchmarks.optimizer_state                 # all three sections, about 3 min on 2 cores
    python -m benchmarks.optimizer_state --sections=memory

One JSON line per (section, choice):
  memory   bytes of the optimizer state of the released 1B transformer (configs/editmgt_1b.py),
           from `jax.eval_shape` of `tx.init` only (nothing is allocated), and bytes per parameter.
  quality  `--steps` real train steps (`make_train_step`) of a miniature transformer on the same
           fixed edit-like data, init and keys for every choice: final loss, mean of the last 50,
           max and mean |loss - float32's loss| over the steps, ms per step.
  drift    open loop: the Adam scaling alone on one fixed stream of noisy gradients of a
           [128, 1024] matrix with log-normal row, column (`--drift_spreads`) and element
           scales (`drift`), fed to the choice and to float32 Adam alike: the relative RMS error of the update at a few steps
           and the ratio of update norms. Shows what a few hundred steps cannot: how the stored
           moments drift over thousands of steps with b2 = 0.999.
"""

from __future__ import annotations

import json
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from configs import common, editmgt_1b, smoke
from editmgt_jax.models.transformer import Transformer, example_inputs
from editmgt_jax.models.transformer_config import TransformerConfig
from editmgt_jax.training import low_memory_adam
from editmgt_jax.training.optimizer import MOMENTS, make_optimizer
from editmgt_jax.training.step import StepOptions, make_train_step
from editmgt_jax.training.train_state import TrainState

_SECTIONS = flags.DEFINE_list("sections", ["memory", "quality", "drift"], "What to measure.")
_STEPS = flags.DEFINE_integer("steps", 300, "Train steps of the quality section.")
_DRIFT_STEPS = flags.DEFINE_integer("drift_steps", 2000, "Steps of the drift section.")
_DRIFT_SPREADS = flags.DEFINE_list(
    "drift_spreads", ["0.5", "1.5"], "Std of log row / column gradient scales, per drift run."
)

# The released model's fine-tuning recipe (bitsandbytes AdamW8bit there): betas (0.9, 0.999),
# eps 1e-8, weight decay 0.01, clip 10, constant lr. The miniature trains from scratch for a few
# hundred steps, so its learning rate is 1e-3 instead of the recipe's 1e-4.
RECIPE = dict(b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01, grad_clip=10.0, decay="constant")


def _emit(**record) -> None:
    print(json.dumps(record), flush=True)


def _state_bytes(tree) -> int:
    return int(sum(x.size * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def memory() -> None:
    cfg = TransformerConfig.from_dict(editmgt_1b.get_config().model)
    inputs = example_inputs(cfg, batch=1, grid=(16, 16), text_len=8)
    params = jax.eval_shape(
        lambda key: nn.meta.unbox(Transformer(cfg).init(key, **inputs)["params"]),
        jax.random.key(0),
    )
    count = int(sum(x.size for x in jax.tree.leaves(params)))
    reference = None
    for moments in MOMENTS:
        tx = make_optimizer(common.optim(**RECIPE, learning_rate=1e-4, moments=moments), 1000)
        nbytes = _state_bytes(jax.eval_shape(tx.init, params))
        reference = reference or nbytes
        _emit(
            section="memory",
            moments=moments,
            model="editmgt_1b",
            params=count,
            param_bytes=_state_bytes(params),
            state_bytes=nbytes,
            state_gib=round(nbytes / 2**30, 3),
            bytes_per_param=round(nbytes / count, 4),
            saved_vs_float32=round(1 - nbytes / reference, 4),
        )


def _miniature():
    """The smoke transformer widened to 4 x 32 = 128 features and 2 single blocks (so its
    128 x 512 and 384 x 128 matrices are quantized and factored, as the 1B's are)."""
    config = smoke.get_config()
    config.model.update(
        num_attention_heads=4,
        attention_head_dim=32,
        axes_dims_rope=(8, 12, 12),
        num_single_layers=2,
    )
    return TransformerConfig.from_dict(config.model)


def _edit_data(cfg: TransformerConfig, n: int = 64, grid: int = 8, text_len: int = 32, seed=0):
    """Fixed edit-like examples: the target is the source with one region's tokens shifted by an
    amount the instruction (one of 4, a fixed random text embedding) names; region and shift are
    learnable from (source, instruction), so the loss falls well below log(codebook)."""
    rng = np.random.default_rng(seed)
    v = cfg.codebook_size
    source = rng.integers(0, v, (n, grid, grid))
    kind = rng.integers(0, 4, n)
    region = np.zeros((n, grid, grid), bool)
    rows, cols = np.arange(grid)[:, None], np.arange(grid)[None, :]
    for i, k in enumerate(kind):
        region[i] = (rows < grid // 2) if k < 2 else (cols < grid // 2)
    target = np.where(region, (source + 1 + kind[:, None, None]) % v, source)
    states = rng.standard_normal((4, text_len, cfg.joint_attention_dim)).astype(np.float32)
    pooled = rng.standard_normal((4, cfg.pooled_projection_dim)).astype(np.float32)
    return dict(
        target_tokens=target.astype(np.int32),
        source_tokens=source.astype(np.int32),
        text_states=states[kind],
        pooled=pooled[kind],
        micro_conds=np.tile(np.float32([32, 32, 0, 0, 6]), (n, 1)),
    )


def quality(steps: int) -> None:
    cfg = _miniature()
    model = Transformer(cfg)
    data = _edit_data(cfg)
    order = np.random.default_rng(1).integers(0, len(data["target_tokens"]), (steps, 8))
    sample = example_inputs(cfg, batch=1, grid=(8, 8), text_len=32)
    init = jax.jit(lambda key: nn.meta.unbox(model.init(key, **sample)["params"]))
    params = init(jax.random.key(0))
    count = int(sum(x.size for x in jax.tree.leaves(params)))
    uncond = (
        jnp.zeros((32, cfg.joint_attention_dim)),
        jnp.zeros((cfg.pooled_projection_dim,)),
    )
    step = jax.jit(make_train_step(model, StepOptions(mask_id=cfg.mask_token_id)))
    reference = None
    for moments in MOMENTS:
        tx = make_optimizer(common.optim(**RECIPE, learning_rate=1e-3, moments=moments), steps)
        state = TrainState.create(jax.tree.map(jnp.copy, params), tx)
        losses, start = [], None
        for i in range(steps):
            batch = {k: jnp.asarray(x[order[i]]) for k, x in data.items()}
            state, metrics = step(state, batch, *uncond, jax.random.key(1))
            losses.append(float(metrics["loss"]))  # waits for the step
            if i == 0:
                start = time.perf_counter()  # after the compile
        ms = 1e3 * (time.perf_counter() - start) / max(steps - 1, 1)
        losses = np.asarray(losses)
        reference = losses if reference is None else reference
        delta = np.abs(losses - reference)
        _emit(
            section="quality",
            moments=moments,
            model="smoke widened (4 x 32 features, 1 + 2 blocks)",
            params=count,
            steps=steps,
            first_loss=round(float(losses[0]), 4),
            final_loss=round(float(losses[-1]), 4),
            last50_mean=round(float(losses[-50:].mean()), 4),
            max_abs_delta_vs_float32=round(float(delta.max()), 4),
            mean_abs_delta_vs_float32=round(float(delta.mean()), 4),
            last50_delta_vs_float32=round(float(losses[-50:].mean() - reference[-50:].mean()), 4),
            skipped=int(state.skipped_steps),
            ms_per_step=round(ms, 1),
        )


def _scaling(moments: str) -> optax.GradientTransformation:
    b1, b2, eps = RECIPE["b1"], RECIPE["b2"], RECIPE["eps"]
    return {
        "float32": lambda: optax.scale_by_adam(b1, b2, eps),
        "bfloat16": lambda: low_memory_adam.scale_by_adam_bf16(b1, b2, eps),
        "bfloat16 (round to nearest)": lambda: low_memory_adam.scale_by_adam_bf16(
            b1, b2, eps, stochastic_rounding=False
        ),
        "int8": lambda: low_memory_adam.scale_by_adam_int8(b1, b2, eps),
        "factored": lambda: low_memory_adam.scale_by_adam_factored(b1, b2, eps),
    }[moments]()


def drift(steps: int, spread: float, shape=(128, 1024)) -> None:
    """g_t[i, j] = (signal[i, j] + noise_t[i, j]) r[i] c[j] e[i, j]: log-normal row and column
    scales r, c (log std `spread`) and element scales e (log std 0.5, the part of E[g^2] that is
    not rank one); fixed signal 0.3 N(0, 1), fresh N(0, 1) noise every step."""
    rng = np.random.default_rng(0)
    rows, cols = (np.exp(rng.standard_normal(n) * spread) for n in shape)
    elements = np.exp(rng.standard_normal(shape) * 0.5)
    scale = jnp.asarray(rows[:, None] * cols[None, :] * elements, jnp.float32)
    signal = jnp.asarray(0.3 * rng.standard_normal(shape), jnp.float32)
    at = [t for t in (1, 10, 100, 300, 1000, 2000, 5000) if t <= steps]
    ref = _scaling("float32")
    for moments in ("bfloat16", "bfloat16 (round to nearest)", "int8", "factored"):
        tx = _scaling(moments)

        def body(carry, t, tx=tx):
            ref_state, state = carry
            noise = jax.random.normal(jax.random.fold_in(jax.random.key(2), t), shape)
            g = (signal + noise) * scale
            u_ref, ref_state = ref.update(g, ref_state)
            u, state = tx.update(g, state)
            err = jnp.sqrt(jnp.sum((u - u_ref) ** 2) / jnp.sum(u_ref**2))
            ratio = jnp.sqrt(jnp.sum(u**2) / jnp.sum(u_ref**2))
            return (ref_state, state), (err, ratio)

        def run(body=body, tx=tx):
            p = jnp.zeros(shape)
            return jax.lax.scan(body, (ref.init(p), tx.init(p)), jnp.arange(steps))[1]

        err, ratio = (np.asarray(x) for x in jax.jit(run)())
        _emit(
            section="drift",
            moments=moments,
            column_scale_log_std=spread,
            update_rel_err={str(t): round(float(err[t - 1]), 4) for t in at},
            update_norm_ratio={str(t): round(float(ratio[t - 1]), 4) for t in at},
        )


def main(argv) -> None:
    del argv
    if "memory" in _SECTIONS.value:
        memory()
    if "quality" in _SECTIONS.value:
        quality(_STEPS.value)
    if "drift" in _SECTIONS.value:
        for spread in _DRIFT_SPREADS.value:
            drift(_DRIFT_STEPS.value, float(spread))


if __name__ == "__main__":
    app.run(main)
