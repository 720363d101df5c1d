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
