"""The token-sampling temperature: 0 takes the most likely code, 1 samples as official."""

import jax
import numpy as np
import pytest

from editmgt_jax.sampling.decode import DecodeConfig, decode, make_inputs


def _toy(tokens, source, text, pooled, micro, t):
    # Code (source + 1) % 7 is the most likely, but only a little: a spread-out distribution.
    logits = jax.nn.one_hot((source + 1) % 7, 8) * 1.0
    return logits.at[..., 7].set(-1e9), None


def test_temperature_zero_takes_the_most_likely_code_and_one_samples():
    src = np.arange(64, dtype=np.int32).reshape(1, 8, 8) % 7
    inputs = make_inputs(src, np.zeros((1, 2, 4)), np.zeros((1, 3)), np.zeros(5))
    expected = (src + 1) % 7
    greedy = decode(
        _toy, inputs, jax.random.key(0), DecodeConfig(4, 7, sample_temperature=0.0)
    ).tokens
    np.testing.assert_array_equal(greedy, expected)
    sampled = decode(_toy, inputs, jax.random.key(0), DecodeConfig(4, 7)).tokens
    assert (np.asarray(sampled) != expected).mean() > 0.3  # official sampling spreads out
    sharp = decode(
        _toy, inputs, jax.random.key(0), DecodeConfig(4, 7, sample_temperature=0.05)
    ).tokens
    np.testing.assert_array_equal(sharp, expected)
    with pytest.raises(ValueError, match="sample_temperature"):
        DecodeConfig(4, 7, sample_temperature=-1.0)


def test_source_logit_bias_keeps_the_source_code_unless_the_model_is_surer():
    # The toy prefers (source + 1) % 7 by a logit margin of 1.0 over every other code, the source
    # included: a bias below that margin changes nothing, one above it keeps every source code.
    src = np.arange(64, dtype=np.int32).reshape(1, 8, 8) % 7
    inputs = make_inputs(src, np.zeros((1, 2, 4)), np.zeros((1, 3)), np.zeros(5))

    def run(bias):
        config = DecodeConfig(4, 7, sample_temperature=0.0, source_logit_bias=bias)
        return np.asarray(decode(_toy, inputs, jax.random.key(0), config).tokens)

    np.testing.assert_array_equal(run(0.0), (src + 1) % 7)
    np.testing.assert_array_equal(run(0.5), (src + 1) % 7)
    np.testing.assert_array_equal(run(1.5), src)
    with pytest.raises(ValueError, match="source_logit_bias"):
        DecodeConfig(4, 7, source_logit_bias=float("nan"))


def test_region_source_bias_keeps_the_source_where_the_region_score_is_low():
    # Scores 1 on the top half, 0 on the bottom: with "max" rescaling and no smoothing the margin
    # is 1.5 at the bottom (beats the toy's 1.0 preference) and 0 at the top.
    src = np.arange(64, dtype=np.int32).reshape(1, 8, 8) % 7
    top = np.zeros((8, 8), np.float32)
    top[:4] = 1.0

    def toy_with_scores(tokens, source, text, pooled, micro, t):
        logits, _ = _toy(tokens, source, text, pooled, micro, t)
        return logits, jax.numpy.broadcast_to(top.reshape(1, 64), (tokens.shape[0], 64))

    inputs = make_inputs(src, np.zeros((1, 2, 4)), np.zeros((1, 3)), np.zeros(5))
    config = DecodeConfig(
        4, 7, sample_temperature=0.0, smoothing="none", score_rescale="max",
        region_source_bias=1.5,
    )  # fmt: skip
    tokens = np.asarray(decode(toy_with_scores, inputs, jax.random.key(0), config).tokens)
    np.testing.assert_array_equal(tokens[0, :4], ((src + 1) % 7)[0, :4])
    np.testing.assert_array_equal(tokens[0, 4:], src[0, 4:])
    # Without scores from the model the region margin has nothing to follow: plain decoding.
    plain = np.asarray(decode(_toy, inputs, jax.random.key(0), config).tokens)
    np.testing.assert_array_equal(plain, (src + 1) % 7)


def test_decode_config_for_takes_the_pipeline_margins_unless_overridden():
    from editmgt_jax.models.transformer_config import TransformerConfig
    from editmgt_jax.sampling.transformer_fn import decode_config_for

    cfg = TransformerConfig()
    pipeline = dict(schedule="cosine", temperature=[2.0, 0.0], smoothing="adaptive")
    plain = decode_config_for(cfg, pipeline, 4, (8, 8))  # a bundle that predates the margins
    assert (plain.source_logit_bias, plain.region_source_bias) == (0.0, 0.0)
    pipeline.update(source_logit_bias=1.0, region_source_bias=12.0)
    stored = decode_config_for(cfg, pipeline, 4, (8, 8))
    assert (stored.source_logit_bias, stored.region_source_bias) == (1.0, 12.0)
    over = decode_config_for(cfg, pipeline, 4, (8, 8), region_source_bias=0.0)
    assert (over.source_logit_bias, over.region_source_bias) == (1.0, 0.0)
