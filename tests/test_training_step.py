"""The masked-token training step: masking, loss, non-finite skipping, and that it learns."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from configs import common, official_tiny
from editmgt_jax.models.transformer import Transformer, TransformerConfig, example_inputs
from editmgt_jax.training.lora import DEFAULT_TARGETS, init_lora, merge
from editmgt_jax.training.losses import masked_token_loss
from editmgt_jax.training.masking import mask_tokens
from editmgt_jax.training.optimizer import make_optimizer
from editmgt_jax.training.step import StepOptions, make_train_step
from editmgt_jax.training.train_state import TrainState

CFG = TransformerConfig.from_dict(official_tiny.get_config().model).replace(
    timestep_convention="mask_ratio"
)


def optim(**overrides):
    return common.optim(**{"learning_rate": 3e-3, "weight_decay": 0.0, **overrides})


def test_mask_tokens_masks_exactly_round_r_l():
    tokens = jnp.zeros((64, 4, 6), jnp.int32)
    masked, mask, ratio = mask_tokens(jax.random.key(0), tokens, 99, min_ratio=0.1)
    counts = np.asarray(mask.reshape(64, -1).sum(-1))
    expected = np.clip(np.round(np.asarray(ratio) * 24), 1, 24)
    np.testing.assert_array_equal(counts, expected)
    assert np.all(np.asarray(ratio) >= 0.1)
    np.testing.assert_array_equal(np.asarray(masked == 99), np.asarray(mask))


def test_loss_counts_masked_positions_only():
    logits = jnp.zeros((1, 1, 2, 4)).at[0, 0, 0, 1].set(10.0)
    targets = jnp.array([[[1, 3]]])
    loss, metrics = masked_token_loss(logits, targets, jnp.array([[[True, False]]]))
    assert float(metrics["masked_accuracy"]) == 1.0 and float(loss) < 1e-3
    loss2, _ = masked_token_loss(logits, targets, jnp.array([[[False, True]]]))
    assert float(loss2) > 1.0


def _batch(seed=0, batch=4):
    x = example_inputs(CFG, batch=batch, grid=(8, 8), text_len=6, seed=seed)
    rng = np.random.default_rng(seed)
    return dict(
        target_tokens=jnp.asarray(rng.integers(0, CFG.codebook_size, (batch, 8, 8)), jnp.int32),
        source_tokens=x["source_tokens"],
        text_states=x["text_states"],
        pooled=x["pooled"],
        micro_conds=x["micro_conds"],
    )


def _state(tx):
    model = Transformer(CFG)
    inputs = example_inputs(CFG, batch=1, grid=(8, 8), text_len=6)
    params = model.init(jax.random.key(0), **inputs)["params"]
    return model, TrainState.create(nn.meta.unbox(params), tx)


def test_loss_falls_when_overfitting_a_few_examples():
    model, state = _state(make_optimizer(optim(), 40))
    step = jax.jit(make_train_step(model, StepOptions(mask_id=CFG.mask_token_id, cond_dropout=0.0)))
    batch = _batch()
    unc_s, unc_p = jnp.zeros((6, CFG.joint_attention_dim)), jnp.zeros((CFG.pooled_projection_dim,))
    losses = []
    for _ in range(40):
        state, metrics = step(state, batch, unc_s, unc_p, jax.random.key(1))
        losses.append(float(metrics["loss"]))
    assert int(state.step) == 40
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses


def test_nonfinite_step_is_skipped_and_counted():
    model, state = _state(make_optimizer(optim(), 10))
    step = jax.jit(make_train_step(model, StepOptions(mask_id=CFG.mask_token_id)))
    batch = _batch()
    batch["text_states"] = batch["text_states"].at[0, 0, 0].set(jnp.nan)
    unc_s, unc_p = jnp.zeros((6, CFG.joint_attention_dim)), jnp.zeros((CFG.pooled_projection_dim,))
    before = jax.tree.map(np.asarray, state.params)
    for _ in range(2):
        state, metrics = step(state, batch, unc_s, unc_p, jax.random.key(1))
    assert int(metrics["nonfinite"]) == 1
    assert (
        int(state.step) == 0 and int(state.skipped_steps) == 2 and int(state.consecutive_skips) == 2
    )
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, state.params))
    good = _batch()
    state, metrics = step(state, good, unc_s, unc_p, jax.random.key(1))
    assert int(state.step) == 1 and int(state.consecutive_skips) == 0


def test_lora_trains_adapters_only():
    model = Transformer(CFG)
    inputs = example_inputs(CFG, batch=1, grid=(8, 8), text_len=6)
    base = nn.meta.unbox(model.init(jax.random.key(0), **inputs)["params"])
    adapters = init_lora(jax.random.key(1), base, rank=2, targets=DEFAULT_TARGETS)
    # q, k, v, out for image and text in double blocks (8); q, k, v in single blocks (3).
    expected = 2 * (8 * CFG.num_layers + 3 * CFG.num_single_layers)
    assert len(jax.tree.leaves(adapters)) == expected
    state = TrainState.create(adapters, make_optimizer(optim(), 10), frozen_params=base)
    options = StepOptions(mask_id=CFG.mask_token_id, cond_dropout=0.0, lora_scale=8.0)
    step = jax.jit(make_train_step(model, options))
    unc_s, unc_p = jnp.zeros((6, CFG.joint_attention_dim)), jnp.zeros((CFG.pooled_projection_dim,))
    for _ in range(3):
        state, _ = step(state, _batch(), unc_s, unc_p, jax.random.key(1))
    jax.tree.map(np.testing.assert_array_equal, base, state.frozen_params)
    b = state.params["transformer_blocks_0"]["attn"]["to_q"]["kernel"]["lora_b"]
    assert float(jnp.abs(b).max()) > 0  # adapters moved
    merged = merge(base, state.params, 8.0)
    q = merged["transformer_blocks_0"]["attn"]["to_q"]["kernel"]
    assert float(jnp.abs(q - base["transformer_blocks_0"]["attn"]["to_q"]["kernel"]).max()) > 0


def test_ema_warms_up_then_uses_the_configured_decay():
    model, state = _state(make_optimizer(optim(), 10))
    step = jax.jit(make_train_step(model, StepOptions(mask_id=CFG.mask_token_id, ema_decay=0.999)))
    unc_s, unc_p = jnp.zeros((6, CFG.joint_attention_dim)), jnp.zeros((CFG.pooled_projection_dim,))
    leaf = lambda tree: np.asarray(jax.tree.leaves(tree)[0], np.float64)
    old = leaf(state.ema_params)
    state, _ = step(state, _batch(), unc_s, unc_p, jax.random.key(1))
    # First step: decay (1 + 0) / (10 + 0) = 0.1, not 0.999 (which would keep the init weights).
    np.testing.assert_allclose(
        leaf(state.ema_params), 0.1 * old + 0.9 * leaf(state.params), atol=1e-6
    )
    decay = min(0.999, (1 + 5000) / (10 + 5000))
    state = state.replace(step=jnp.asarray(5000, state.step.dtype))
    old = leaf(state.ema_params)
    state, _ = step(state, _batch(1), unc_s, unc_p, jax.random.key(2))
    np.testing.assert_allclose(
        leaf(state.ema_params), decay * old + (1 - decay) * leaf(state.params), atol=1e-6
    )
