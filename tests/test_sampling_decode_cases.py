"""Sampler cases with hand-made models whose outcome is known: classifier-free guidance, the
timestep conventions, lowest-confidence re-masking under ties, and input errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from editmgt_jax.sampling import schedule
from editmgt_jax.sampling.decode import DecodeConfig, decode, make_inputs

CODES = 16
MASK = CODES


def _host(state):
    """The final state as numpy arrays (keys as their raw data)."""
    return jax.tree.map(np.asarray, state.replace(rng=jax.random.key_data(state.rng)))


def _peaked_cfg_model(tokens, source, text_states, pooled, micro_conds, timestep):
    # cond (text 1): token 1 -> 40, token 2 -> 50; uncond (text 0): token 2 -> 100.
    cond = text_states[:, 0, 0][:, None, None]
    shape = (*tokens.shape, CODES)
    logits = jnp.zeros(shape)
    logits = logits.at[..., 1].set(40.0 * cond)
    logits = logits.at[..., 2].set(50.0 * cond + 100.0 * (1 - cond))
    return logits, None


def test_classifier_free_guidance_per_sample():
    # u + g (c - u): g = 3 favours token 1 (120 vs -50); g = 1 uses c alone, which favours token 2.
    inputs = make_inputs(
        np.zeros((2, 4, 4), np.int32),
        np.ones((2, 3, 2), np.float32),
        np.zeros((2, 4), np.float32),
        np.zeros(5, np.float32),
        uncond_text_states=np.zeros((1, 3, 2), np.float32),
        uncond_pooled=np.zeros((1, 4), np.float32),
        guidance=[3.0, 1.0],
    )
    config = DecodeConfig(num_steps=3, mask_token_id=MASK)
    out = decode(_peaked_cfg_model, inputs, jax.random.split(jax.random.key(0), 2), config)
    assert np.all(np.asarray(out.tokens)[0] == 1) and np.all(np.asarray(out.tokens)[1] == 2)


def _timestep_model(tokens, source, text_states, pooled, micro_conds, timestep):
    # Predicts the token id round(timestep * scale) (scale in pooled[:, 0]) with certainty.
    ids = jnp.clip(jnp.round(timestep * pooled[:, 0]), 0, CODES - 1).astype(jnp.int32)
    logits = 60.0 * jax.nn.one_hot(ids, CODES)[:, None, None, :]
    return jnp.broadcast_to(logits, (*tokens.shape, CODES)), None


@pytest.mark.parametrize("convention", ["official", "mask_ratio"])
def test_timestep_conventions_reach_the_model(convention):
    scale = 1.0 if convention == "official" else 10.0
    inputs = make_inputs(
        np.zeros((1, 4, 4), np.int32), np.zeros((1, 2, 2)), np.full((1, 2), scale), np.zeros(5)
    )
    config = DecodeConfig(
        num_steps=5, mask_token_id=MASK, timestep_convention=convention, record_steps=True
    )
    out = _host(decode(_timestep_model, inputs, jax.random.key(0), config))
    for i in range(5):
        if convention == "official":
            want = 5 - 1 - i
        else:
            want = round(10 * out.masked_history[i].sum() / 16)
        assert np.all(out.tokens[out.revealed_at == i] == want), (i, want)


def _ladder_model(tokens, source, text_states, pooled, micro_conds, timestep):
    # Position p allows k(p) equally likely tokens, so log p(chosen) = -log k(p) whatever is drawn.
    k = (jnp.arange(tokens.shape[1] * tokens.shape[2]) % CODES + 1).reshape(tokens.shape[1:])
    allowed = jnp.arange(CODES)[None, None, :] < k[:, :, None]
    logits = jnp.where(allowed, 0.0, -1e9)
    return jnp.broadcast_to(logits, (*tokens.shape, CODES)), None


def test_remasking_takes_the_least_confident_and_exact_counts_under_ties():
    inputs = make_inputs(
        np.zeros((2, 8, 8), np.int32), np.zeros((2, 2, 2)), np.zeros((2, 2)), np.zeros(5)
    )
    config = DecodeConfig(
        num_steps=4, mask_token_id=MASK, temperature=(0.0, 0.0), record_steps=True
    )
    out = _host(decode(_ladder_model, inputs, jax.random.key(0), config))
    k = np.arange(64).reshape(8, 8) % CODES + 1
    counts = schedule.masked_counts(64, 4)
    for i in range(3):
        for b in range(2):
            still = out.tokens_history[i, b] == MASK
            # Many positions share a k (ties): the count is still exact.
            assert int(still.sum()) == counts[i]
            revealed = out.masked_history[i, b] & ~still
            # Lower confidence = larger k; every re-masked one is at most as confident.
            assert k[still].min() >= k[revealed].max()


def test_bad_inputs_are_reported_with_the_value():
    src = np.zeros((2, 4, 4), np.int32)
    text, pooled, micro = np.zeros((2, 3, 2)), np.zeros((2, 4)), np.zeros(5)
    with pytest.raises(
        ValueError, match=r"lambda\) must be in \[0, 1\]; got \[1.5\] for samples \[1\]"
    ):
        make_inputs(src, text, pooled, micro, hold_threshold=[0.2, 1.5])
    with pytest.raises(ValueError, match="needs uncond_text_states"):
        make_inputs(src, text, pooled, micro, guidance=4.0)
    with pytest.raises(ValueError, match="edit_mask shape"):
        make_inputs(src, text, pooled, micro, edit_mask=np.ones((3, 3), bool))
    with pytest.raises(ValueError, match=r"must lie in \[0, 7\)"):
        make_inputs(src + 7, text, pooled, micro, mask_token_id=7)
    with pytest.raises(ValueError, match="micro_conds"):
        make_inputs(src, text, pooled, np.zeros(4))
    with pytest.raises(ValueError, match="num_steps must be a positive int, got 0"):
        DecodeConfig(num_steps=0, mask_token_id=7)
    with pytest.raises(ValueError, match="'zigzag'"):
        DecodeConfig(num_steps=2, mask_token_id=7, schedule="zigzag")
    inputs = make_inputs(src, text, pooled, micro, hold_threshold=0.3)
    config = DecodeConfig(num_steps=2, mask_token_id=7)
    with pytest.raises(ValueError, match="keys must be one key or one per sample"):
        decode(_ladder_model, inputs, jax.random.split(jax.random.key(0), 3), config)
    with pytest.raises(ValueError, match="hold_threshold is set but model_fn returned no scores"):
        decode(_ladder_model, inputs, jax.random.key(0), config)
