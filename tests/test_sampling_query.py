"""Localization by a query phrase inside the sampler: per-text-token scores weighted per sample."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from editmgt_jax.sampling import localization
from editmgt_jax.sampling.decode import DecodeConfig, decode, make_inputs

CODES = 16
MASK = CODES


def _per_text_model(tokens, source, text_states, pooled, micro_conds, timestep):
    # Scores per text token [2B, T, 16] on a 4 x 4 grid: token t is bright at cell 5 t (+ text value).
    t_len = text_states.shape[1]
    maps = jax.nn.one_hot(5 * jnp.arange(t_len), 16)[None] + 0.1 * text_states[:, :, :1]
    logits = jnp.zeros((*tokens.shape, CODES))
    return logits, jnp.broadcast_to(maps, (tokens.shape[0], t_len, 16))


def test_query_text_weights_select_the_localization_map():
    rng = np.random.default_rng(0)
    text = rng.normal(size=(2, 3, 2)).astype(np.float32)
    weights = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]], np.float32)
    inputs = make_inputs(
        np.zeros((2, 4, 4), np.int32),
        text,
        np.zeros((2, 2)),
        np.zeros(5),
        uncond_text_states=np.zeros((2, 3, 2), np.float32),
        uncond_pooled=np.zeros((2, 2), np.float32),
        guidance=2.0,
        hold_threshold=0.5,
        text_weights=weights,
    )
    config = DecodeConfig(num_steps=2, mask_token_id=MASK)
    out = decode(_per_text_model, inputs, jax.random.key(0), config)
    scores, hold_mask = np.asarray(out.scores), np.asarray(out.hold_mask)
    maps = np.eye(16, dtype=np.float32)[[0, 5, 10]][None] + 0.1 * text[:, :, :1]
    expected = (weights[:, :, None] * maps).sum(1) / weights.sum(1, keepdims=True)
    want = localization.region_scores(jnp.asarray(expected), (4, 4), (4, 4))
    np.testing.assert_allclose(scores.reshape(2, 16), want, atol=1e-6)
    np.testing.assert_array_equal(hold_mask, scores < 0.5)
    assert 0 < hold_mask.sum() < hold_mask.size
    # [B, n] scores cannot be weighted: an error, not a silent plain mean.
    flat = make_inputs(
        np.zeros((2, 4, 4), np.int32), text, np.zeros((2, 2)), np.zeros(5), text_weights=weights
    )

    def flat_model(*args):
        logits, per_text = _per_text_model(*args)
        return logits, per_text.mean(axis=1)

    with pytest.raises(ValueError, match="text_weights need per-text-token scores"):
        decode(flat_model, flat, jax.random.key(0), config)
    with pytest.raises(ValueError, match="text_weights must be non-negative with 3"):
        make_inputs(
            np.zeros((2, 4, 4), np.int32),
            text,
            np.zeros((2, 2)),
            np.zeros(5),
            text_weights=np.ones((2, 4)),
        )
