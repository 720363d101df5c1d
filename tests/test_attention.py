"""The attention math: chunked == one block (values and gradients), with and without the bias."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from editmgt_jax.nn.attention import attention_with_logits, chunked_attention, reference_bias


def _qkv(length: int, seed: int = 0):
    keys = jax.random.split(jax.random.key(seed), 3)
    shape = (2, length, 3, 8)  # [batch, L, heads, head_dim]
    return tuple(2.0 * jax.random.normal(key, shape) for key in keys)


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("chunk", [0, 7, 16, 64])
def test_chunked_attention_equals_one_block(chunk, with_bias):
    q, k, v = _qkv(37)  # 37 rows: every chunk size leaves a padded last block
    bias = reference_bias(37, 11, jnp.log(1.7)) if with_bias else None
    expected, _ = attention_with_logits(q, k, v, bias)
    got = chunked_attention(q, k, v, bias, chunk)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-6, rtol=2e-6)


def test_chunked_attention_gradients_match():
    q, k, v = _qkv(29, seed=1)
    bias = reference_bias(29, 9, jnp.log(0.6))

    def loss(fn):
        return lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v)))

    one_block = loss(lambda q, k, v: attention_with_logits(q, k, v, bias)[0])
    chunked = loss(lambda q, k, v: chunked_attention(q, k, v, bias, 8))
    for got, expected in zip(
        jax.grad(chunked, argnums=(0, 1, 2))(q, k, v),
        jax.grad(one_block, argnums=(0, 1, 2))(q, k, v),
        strict=True,
    ):
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_chunk_is_a_validated_config_field():
    from editmgt_jax.models.transformer_config import TransformerConfig

    assert TransformerConfig().attention_chunk > 0
    with pytest.raises(ValueError, match="attention_chunk"):
        TransformerConfig(attention_chunk=-1)
