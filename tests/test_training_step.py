"""The masked-token training step: masking, loss, non-finite skipping, and that it learns."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common, official_tiny
from editmgt_jax.models.transformer import Transformer, TransformerConfig, example_inputs
from editmgt_jax.training.lora import DEFAULT_TARGETS, init_lora, merge
from editmgt_jax.training.losses import masked_token_loss
from editmgt_jax.training.masking import cosine_mask_ratio, mask_tokens
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


def _cosine_law(x):
    """P(cos(pi/2 u) <= x) for u ~ U(0, 1)."""
    return 1.0 - 2.0 / np.pi * np.arccos(np.clip(x, 0.0, 1.0))


def _ks_distance(sample, cdf, above):
    """Kolmogorov-Smirnov distance between a sample's empirical CDF and `cdf`, over the values
    > `above` (where `cdf` is continuous; the atom at the clip is checked on its own)."""
    x = np.sort(np.asarray(sample))
    n, i = len(x), np.nonzero(x > above)[0]
    return max(np.max(np.abs((i + 1) / n - cdf(x[i]))), np.max(np.abs(i / n - cdf(x[i]))))


def test_mask_ratios_follow_the_cosine_law():
    # Exact values: r = cos(pi/2 u), clipped below at min_ratio.
    u = jnp.array([0.0, 1 / 3, 2 / 3, 0.95])
    np.testing.assert_allclose(
        np.asarray(cosine_mask_ratio(u, 0.1)), [1.0, np.sqrt(3) / 2, 0.5, 0.1], rtol=1e-6
    )
    # The ratios mask_tokens draws: P(r <= x) = 1 - (2/pi) arccos(x) above min_ratio, and an
    # atom of that mass at min_ratio. Kolmogorov-Smirnov over 8192 draws, 1% critical value.
    n, min_ratio = 8192, 0.1
    _, _, ratio = mask_tokens(jax.random.key(3), jnp.zeros((n, 1, 2), jnp.int32), 9, min_ratio)
    ratio = np.asarray(ratio)
    critical = 1.63 / np.sqrt(n)
    assert ratio.min() == pytest.approx(min_ratio) and ratio.max() <= 1.0
    assert abs(np.mean(ratio <= min_ratio + 1e-6) - _cosine_law(min_ratio)) < critical
    assert _ks_distance(ratio, _cosine_law, min_ratio + 1e-6) < critical
    # The statistic tells the laws apart: a linear schedule's ratios (1 - u) fail it.
    linear = np.clip(1.0 - np.random.default_rng(0).random(n), min_ratio, 1.0)
    assert _ks_distance(linear, _cosine_law, min_ratio + 1e-6) > 3 * critical


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


@pytest.fixture(scope="module")
def init_params():
    """The model's initial parameters, made once (jitted) for every test of this module."""
    inputs = example_inputs(CFG, batch=1, grid=(8, 8), text_len=6)
    init = jax.jit(lambda key: nn.meta.unbox(Transformer(CFG).init(key, **inputs)["params"]))
    return init(jax.random.key(0, impl="rbg"))  # rbg: the initializers compile much faster


@pytest.fixture(scope="module")
def default_step():
    """(step, optimizer): default options but no condition dropout, and a 40-step optimizer,
    compiled once for the overfitting, non-finite and EMA tests (the optimizer is part of the
    state's static structure, so they must get the same object)."""
    options = StepOptions(mask_id=CFG.mask_token_id, cond_dropout=0.0)
    step = jax.jit(make_train_step(Transformer(CFG), options))
    return step, make_optimizer(optim(), 40)


def _state(tx, params):
    return Transformer(CFG), TrainState.create(params, tx)


def test_loss_falls_when_overfitting_a_few_examples(init_params, default_step):
    step, tx = default_step
    _, state = _state(tx, init_params)
    batch = _batch()
    unc_s, unc_p = jnp.zeros((6, CFG.joint_attention_dim)), jnp.zeros((CFG.pooled_projection_dim,))
    losses = []
    for _ in range(40):
        state, metrics = step(state, batch, unc_s, unc_p, jax.random.key(1))
        losses.append(float(metrics["loss"]))
    assert int(state.step) == 40
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses


def test_nonfinite_step_is_skipped_and_counted(init_params, default_step):
    step, tx = default_step
    _, state = _state(tx, init_params)
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


def test_lora_trains_adapters_only(init_params):
    model = Transformer(CFG)
    base = init_params
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


def test_ema_warms_up_then_uses_the_configured_decay(init_params, default_step):
    step, tx = default_step
    _, state = _state(tx, init_params)
    assert StepOptions(mask_id=CFG.mask_token_id).ema_decay == 0.999  # default_step's decay
    unc_s, unc_p = jnp.zeros((6, CFG.joint_attention_dim)), jnp.zeros((CFG.pooled_projection_dim,))
    leaf = lambda tree: np.asarray(jax.tree.leaves(tree)[0], np.float64)
    old = leaf(state.ema_params)
    state, _ = step(state, _batch(), unc_s, unc_p, jax.random.key(1))
    # First step: decay (1 + 0) / (10 + 0) = 0.1, not 0.999 (which would keep the init weights).
    np.testing.assert_allclose(
        leaf(state.ema_params), 0.1 * old + 0.9 * leaf(state.params), atol=1e-6
    )
    # Still warming up at step 5,000: (1 + 5000) / (10 + 5000) = 0.9982 < 0.999.
    # From step 8,991 on the warm-up would exceed the configured decay: 0.999 exactly (at 20,000
    # the uncapped warm-up would be 0.99955). The EMA is moved 1 away from the weights so that
    # the decay's error (5e-4 between the two) shows far above the tolerance.
    for count, decay in ((5000, (1 + 5000) / (10 + 5000)), (20000, 0.999)):
        state = state.replace(
            step=jnp.asarray(count, state.step.dtype),
            ema_params=jax.tree.map(lambda p: p + 1.0, state.params),
        )
        old = leaf(state.ema_params)
        state, _ = step(state, _batch(1), unc_s, unc_p, jax.random.key(2))
        np.testing.assert_allclose(
            leaf(state.ema_params), decay * old + (1 - decay) * leaf(state.params), atol=1e-6
        )
