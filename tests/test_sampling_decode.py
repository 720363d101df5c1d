"""Invariants of the jitted edit sampler, with small deterministic toy models.

The toy model: logits from embedding look-ups of the current tokens, the source tokens, the position,
a global context (mean embedding of all current tokens) and the text, so that every input matters;
scores (on the 4 x 4 half grid, upsampled to the 8 x 8 token grid) from a fixed blob plus the pooled
text, so that the cond and uncond halves give different maps and the map does not change per step.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from editmgt_jax.sampling import localization, schedule
from editmgt_jax.sampling.decode import DecodeConfig, _decode_jit, decode, make_inputs

CODES = 16  # codebook; mask id = CODES
MASK = CODES
B, H, W, T, D = 3, 8, 8, 5, 6
N_SCORE = (H // 2) * (W // 2)
STEPS = 6


def _toy_params(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: H // 2, : W // 2]
    blob = np.exp(-((yy - 1.0) ** 2 + (xx - 1.0) ** 2) / 2.0).ravel()
    return {
        "tok": jnp.asarray(rng.normal(size=(CODES + 1, CODES)), jnp.float32),
        "src": jnp.asarray(rng.normal(size=(CODES, CODES)), jnp.float32),
        "pos": jnp.asarray(rng.normal(size=(H, W, CODES)), jnp.float32),
        "text": jnp.asarray(rng.normal(size=(D, CODES)), jnp.float32),
        "blob": jnp.asarray(blob, jnp.float32),
    }


def toy_model(params, tokens, source, text_states, pooled, micro_conds, timestep):
    emb = params["tok"][tokens]  # [2B, H, W, C]
    context = jnp.mean(emb, axis=(1, 2))
    text = jnp.sum(jnp.mean(text_states, axis=1)[:, :, None] * params["text"][None], axis=1)
    logits = (
        emb
        + params["src"][source]
        + params["pos"][None]
        + (context + text + 0.01 * micro_conds[:, :1] + 0.01 * timestep[:, None])[:, None, None]
    )
    scores = params["blob"][None] + 0.5 * pooled[:, :N_SCORE]
    return logits, scores


def _inputs(seed: int = 1, **overrides):
    rng = np.random.default_rng(seed)
    edit = np.ones((B, H, W), bool)
    edit[2] = False
    edit[2, 2:7, 1:6] = True  # sample 2 has a user mask
    kwargs = dict(
        mask_token_id=MASK,
        uncond_text_states=np.zeros((1, T, D), np.float32),
        uncond_pooled=rng.normal(size=(B, N_SCORE)).astype(np.float32),
        guidance=[3.0, 1.0, 5.0],
        hold_threshold=[0.0, 0.5, 0.3],
        edit_mask=edit,
    )
    kwargs.update(overrides)
    return make_inputs(
        rng.integers(0, CODES, (B, H, W)).astype(np.int32),
        rng.normal(size=(B, T, D)).astype(np.float32),
        rng.normal(size=(B, N_SCORE)).astype(np.float32),
        np.array([64.0, 64.0, 0.0, 0.0, 6.0], np.float32),
        **kwargs,
    )


def _host(state):
    """The final state as numpy arrays (keys as their raw data)."""
    return jax.tree.map(np.asarray, state.replace(rng=jax.random.key_data(state.rng)))


CONFIG = DecodeConfig(num_steps=STEPS, mask_token_id=MASK, record_steps=True)
# Every call with CONFIG and these shapes must reuse one trace (and so one compile).
COUNTED_MODEL = chex.assert_max_traces(toy_model, n=1)


@pytest.fixture(scope="module")
def run():
    params = _toy_params()
    inputs = _inputs()
    keys = jax.random.split(jax.random.key(0), B)
    out = decode(COUNTED_MODEL, inputs, keys, CONFIG, params=params)
    return params, inputs, keys, _host(out)


def test_final_tokens_are_complete_and_frozen_tokens_never_change(run):
    _, inputs, _, out = run
    source, edit = np.asarray(inputs.source_tokens), np.asarray(inputs.edit_mask)
    assert out.tokens.dtype == np.int32 and out.tokens.shape == (B, H, W)
    assert int(out.step) == STEPS
    assert not np.any(out.tokens == MASK)
    # Outside the user mask: never masked, never changed, at any step.
    assert not np.any(out.masked_history[:, ~edit])
    for i in range(STEPS):
        np.testing.assert_array_equal(out.tokens_history[i][~edit], source[~edit])
    np.testing.assert_array_equal(out.tokens[~edit], source[~edit])
    assert np.all(out.revealed_at[~edit] == -1)
    # Inside: the edit did change tokens (the toy model rarely predicts the source token).
    assert np.mean(out.tokens[edit] != source[edit]) > 0.5


def test_after_each_step_exactly_the_scheduled_number_is_masked(run):
    _, inputs, _, out = run
    totals = np.asarray(inputs.edit_mask).sum(axis=(1, 2))
    for b in range(B):
        expected = schedule.masked_counts(int(totals[b]), STEPS)
        got = [int(np.sum(out.tokens_history[i, b] == MASK)) for i in range(STEPS)]
        assert got == expected, (b, got, expected)
        # The input of step 0 is the user-mask region, fully masked.
        assert int(out.masked_history[0, b].sum()) == totals[b]


def test_every_masked_token_is_revealed_exactly_once(run):
    _, inputs, _, out = run
    edit = np.asarray(inputs.edit_mask)
    assert np.all((out.revealed_at[edit] >= 0) & (out.revealed_at[edit] < STEPS))
    for i in range(STEPS):
        revealed_now = out.masked_history[i] & (out.tokens_history[i] != MASK)
        np.testing.assert_array_equal(revealed_now, out.revealed_at == i)
        if i + 1 < STEPS:
            # Masked after step i == masked in the input of step i + 1, a subset of the input of i.
            np.testing.assert_array_equal(out.tokens_history[i] == MASK, out.masked_history[i + 1])
            assert not np.any(out.masked_history[i + 1] & ~out.masked_history[i])
        # Once revealed, a token stays as it is.
        for j in range(i, STEPS):
            np.testing.assert_array_equal(
                out.tokens_history[j][out.revealed_at == i], out.tokens[out.revealed_at == i]
            )


def test_region_hold_takes_source_tokens_below_each_samples_lambda(run):
    params, inputs, _, out = run
    source = np.asarray(inputs.source_tokens)
    lam = np.asarray(inputs.hold_threshold)
    # The score map is the cond half's (pooled, not uncond_pooled), rescaled, smoothed, resized.
    cond_scores = np.asarray(params["blob"])[None] + 0.5 * np.asarray(inputs.pooled)
    region = localization.region_scores(jnp.asarray(cond_scores), (4, 4), (H, W))
    np.testing.assert_allclose(out.scores.reshape(B, -1), region, atol=1e-6)
    uncond_scores = np.asarray(params["blob"])[None] + 0.5 * np.asarray(inputs.uncond_pooled)
    uncond_region = localization.region_scores(jnp.asarray(uncond_scores), (4, 4), (H, W))
    assert np.abs(np.asarray(uncond_region) - out.scores.reshape(B, -1)).max() > 0.05

    below = out.scores < lam[:, None, None]
    for i in range(STEPS):
        expected = out.masked_history[i] & below & (lam[:, None, None] > 0)
        np.testing.assert_array_equal(out.held_history[i], expected)
        kept = out.held_history[i] & (out.tokens_history[i] != MASK)
        np.testing.assert_array_equal(out.tokens_history[i][kept], source[kept])
    # hold_mask: the final token came from a hold, so it is the source token.
    np.testing.assert_array_equal(out.tokens[out.hold_mask], source[out.hold_mask])
    at = np.clip(out.revealed_at, 0, None)
    held_when_revealed = np.take_along_axis(out.held_history, at[None], axis=0)[0]
    np.testing.assert_array_equal(out.hold_mask, held_when_revealed & (out.revealed_at >= 0))
    # Per-sample lambda: none for lambda 0, some for 0.5 and 0.3 (inside the user mask only).
    assert not out.hold_mask[0].any()
    assert out.hold_mask[1].sum() > 5 and out.hold_mask[2].sum() > 0
    assert not np.any(out.hold_mask[2] & ~np.asarray(inputs.edit_mask)[2])
    np.testing.assert_array_equal(out.hold_mask[1], below[1])


def test_same_key_same_result_and_keys_matter(run):
    params, inputs, keys, out = run
    again = decode(COUNTED_MODEL, inputs, keys, CONFIG, params=params)
    np.testing.assert_array_equal(np.asarray(again.tokens), out.tokens)
    np.testing.assert_array_equal(np.asarray(again.hold_mask), out.hold_mask)
    other_keys = jax.random.split(jax.random.key(1), B)
    other = decode(COUNTED_MODEL, inputs, other_keys, CONFIG, params=params)
    assert np.any(np.asarray(other.tokens) != out.tokens)


def _alone(inputs, b):
    """Sample b of `inputs` as a batch of one (make_inputs drops CFG if its guidance is <= 1)."""
    return make_inputs(
        np.asarray(inputs.source_tokens)[b : b + 1],
        np.asarray(inputs.text_states)[b : b + 1],
        np.asarray(inputs.pooled)[b : b + 1],
        np.asarray(inputs.micro_conds)[b : b + 1],
        mask_token_id=MASK,
        uncond_text_states=np.asarray(inputs.uncond_text_states)[b : b + 1],
        uncond_pooled=np.asarray(inputs.uncond_pooled)[b : b + 1],
        guidance=np.asarray(inputs.guidance)[b : b + 1],
        hold_threshold=np.asarray(inputs.hold_threshold)[b : b + 1],
        edit_mask=np.asarray(inputs.edit_mask)[b : b + 1],
    )


def _assert_same_item(single, out, b):
    np.testing.assert_array_equal(np.asarray(single.tokens)[0], out.tokens[b])
    np.testing.assert_array_equal(np.asarray(single.hold_mask)[0], out.hold_mask[b])
    np.testing.assert_array_equal(np.asarray(single.revealed_at)[0], out.revealed_at[b])


def test_item_in_a_batch_equals_the_item_alone_with_a_user_mask(run):
    params, inputs, keys, out = run
    single = decode(toy_model, _alone(inputs, 2), keys[2:3], CONFIG, params=params)
    _assert_same_item(single, out, 2)


def test_item_alone_without_cfg_and_with_a_closure_model(run):
    # Sample 1 has guidance 1: in the batch it takes the cond logits of the CFG batch; alone, the
    # model runs without CFG. The model is also a closure here (no `params=`).
    params, inputs, keys, out = run

    def closed(tokens, source, text_states, pooled, micro_conds, timestep):
        return toy_model(params, tokens, source, text_states, pooled, micro_conds, timestep)

    alone = _alone(inputs, 1)
    assert alone.uncond_text_states is None
    single = decode(closed, alone, keys[1:2], CONFIG)
    _assert_same_item(single, out, 1)


def test_no_retrace_and_no_host_transfer_on_a_second_call(run):
    params, inputs, _, out = run
    # New values everywhere (tokens, text, guidance, lambda, masks, keys, params), same shapes.
    edit = np.ones((B, H, W), bool)
    edit[0, :3] = False
    new_inputs = _inputs(
        seed=2, guidance=[1.5, 7.0, 2.0], hold_threshold=[0.9, 0.0, 0.1], edit_mask=edit
    )
    new_keys = jax.random.split(jax.random.key(5), B)
    new_params = jax.device_put(jax.tree.map(lambda p: p * 1.5, params))
    with jax.transfer_guard("disallow"):
        second = decode(COUNTED_MODEL, new_inputs, new_keys, CONFIG, params=new_params)
        jax.block_until_ready(second.tokens)
    assert np.any(np.asarray(second.tokens) != out.tokens)
    assert np.all(np.asarray(second.tokens)[0, :3] == np.asarray(new_inputs.source_tokens)[0, :3])
    # The compiled loop has no host callback, infeed/outfeed or send/recv.
    hlo = _decode_jit.lower(COUNTED_MODEL, CONFIG, True, new_params, new_inputs, new_keys)
    text = hlo.as_text().lower()
    assert "while" in text
    for word in ("callback", "outfeed", "infeed", "send", "recv"):
        assert word not in text, word
