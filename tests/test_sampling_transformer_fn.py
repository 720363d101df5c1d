"""The transformer's model_fn for the sampler, micro-conditions and query-phrase positions."""

from __future__ import annotations

import doctest

import jax
import numpy as np
import pytest

from configs import smoke
from editmgt_jax.checkpoint import minilm_tokenizer
from editmgt_jax.models.transformer import Transformer, example_inputs
from editmgt_jax.models.transformer_config import TransformerConfig
from editmgt_jax.sampling import localization, transformer_fn


@pytest.fixture(scope="module")
def smoke_model():
    cfg = TransformerConfig.from_dict(smoke.get_config().model)
    inputs = example_inputs(cfg, batch=2, grid=(8, 8), text_len=6)
    params = jax.jit(lambda k, x: Transformer(cfg).init(k, **x)["params"])(
        jax.random.key(0, impl="rbg"), inputs
    )
    return cfg, params, inputs


def _call(model_fn, params, x):
    args = ("tokens", "source_tokens", "text_states", "pooled", "micro_conds", "timestep")
    return jax.jit(model_fn)(params, *(x[a] for a in args))


def test_docstring_examples():
    result = doctest.testmod(transformer_fn, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_query_scores_average_to_the_reduced_scores(smoke_model):
    cfg, params, x = smoke_model
    logits, reduced = _call(transformer_fn.make_model_fn(cfg, (0, 1)), params, x)
    q_logits, per_text = _call(transformer_fn.make_model_fn(cfg, (0, 1), query=True), params, x)
    assert logits.shape == (2, 8, 8, 64) and logits.dtype == np.float32
    assert reduced.shape == (2, 64) and per_text.shape == (2, 6, 64)
    np.testing.assert_allclose(q_logits, logits, atol=1e-5)
    np.testing.assert_allclose(localization.text_mean(per_text), reduced, atol=1e-6)
    none_logits, none_scores = _call(transformer_fn.make_model_fn(cfg, ()), params, x)
    assert none_scores is None
    np.testing.assert_allclose(none_logits, logits, atol=1e-5)


def test_bad_settings_name_the_value():
    cfg = TransformerConfig.from_dict(smoke.get_config().model)
    with pytest.raises(ValueError, match="capture block 5 is outside"):
        transformer_fn.make_model_fn(cfg, (5,))
    with pytest.raises(ValueError, match="reference_strength must be > 0"):
        transformer_fn.make_model_fn(cfg, (1,), reference_strength=0.0)


def test_query_positions_and_weights():
    tok = minilm_tokenizer(max_length=16)
    ids = tok(["make the red ball blue"]).input_ids[0]
    positions = transformer_fn.query_positions(tok, "make the red ball blue", "red ball")
    assert positions == [3, 4]  # [CLS] make the red ball blue [SEP]
    phrase = tok.tokenizer.encode("red ball", add_special_tokens=False).ids
    assert ids[3:5].tolist() == phrase
    weights, missing = transformer_fn.query_text_weights(
        tok, ["make the red ball blue", "add a cat", "x"], ["ball", None, "zebra"]
    )
    assert missing == ["zebra"]
    assert weights.shape == (3, 16)
    assert weights[0].tolist() == [1.0 if i == 4 else 0.0 for i in range(16)]
    assert np.all(weights[1:] == 1.0)
    with pytest.raises(ValueError, match="query phrase is empty"):
        transformer_fn.query_positions(tok, "make it blue", "  ")
