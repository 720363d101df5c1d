"""The source-copy gate (`TransformerConfig.source_copy`, ours): a learned margin on the source
token's logit that starts at zero, so a warm start computes what the model did without it."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from editmgt_jax.models.token_io import add_source_logit
from editmgt_jax.models.transformer import Transformer, TransformerConfig, example_inputs

CFG = TransformerConfig(
    num_layers=1,
    num_single_layers=1,
    num_attention_heads=2,
    attention_head_dim=16,
    joint_attention_dim=8,
    pooled_projection_dim=8,
    axes_dims_rope=(4, 6, 6),
    vocab_size=17,
    codebook_size=16,
    text_encoder_architecture="MiniLM",
)


def test_add_source_logit_adds_the_gate_at_the_source_code_only():
    logits = jnp.zeros((1, 2, 2, 5))
    source = jnp.array([[[0, 4], [2, 2]]])
    gate = jnp.array([[[1.0, -2.0], [0.5, 0.0]]])
    out = np.asarray(add_source_logit(logits, source, gate))
    expected = np.zeros((1, 2, 2, 5))
    expected[0, 0, 0, 0], expected[0, 0, 1, 4], expected[0, 1, 0, 2] = 1.0, -2.0, 0.5
    np.testing.assert_array_equal(out, expected)


def test_a_fresh_gate_leaves_the_logits_of_the_model_without_it():
    inputs = example_inputs(CFG, batch=2, grid=(4, 4), text_len=3)
    plain = Transformer(CFG).init(jax.random.key(0), **inputs)["params"]
    gated_model = Transformer(CFG.replace(source_copy=True))
    gated = gated_model.init(jax.random.key(1), **inputs)["params"]
    assert set(gated) - set(plain) == {"source_copy"}
    warm = dict(plain, source_copy=gated["source_copy"])  # what init_partial builds
    a = Transformer(CFG).apply({"params": plain}, **inputs)
    b = gated_model.apply({"params": warm}, **inputs)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # A trained gate moves exactly the source codes' logits, by its output.
    bias = jax.tree.map(lambda x: x, warm)
    bias["source_copy"] = dict(bias["source_copy"], fc2=dict(bias["source_copy"]["fc2"]))
    bias["source_copy"]["fc2"]["bias"] = jnp.full((1,), 3.0)
    c = np.asarray(gated_model.apply({"params": bias}, **inputs))
    moved = np.asarray(jax.nn.one_hot(inputs["source_tokens"], CFG.codebook_size)) * 3.0
    np.testing.assert_allclose(c - np.asarray(a), moved, atol=1e-5)
    # Without source tokens there is nothing to copy: the gate is not used.
    no_source = dict(inputs, source_tokens=None)
    np.testing.assert_array_equal(
        np.asarray(gated_model.apply({"params": bias}, **no_source)),
        np.asarray(Transformer(CFG).apply({"params": plain}, **no_source)),
    )


def test_a_gated_model_refuses_the_official_export():
    with pytest.raises(ValueError, match="source_copy"):
        CFG.replace(source_copy=True).to_official_dict()
    assert "source_copy" not in CFG.to_official_dict()


def test_a_fresh_source_head_leaves_the_logits_and_a_trained_one_reads_the_source():
    """`source_head` (ours): a per-token MLP on the features and the source token's embedding,
    zero at the start (a warm start computes what the model did), used only with a source."""
    inputs = example_inputs(CFG, batch=2, grid=(4, 4), text_len=3)
    plain = Transformer(CFG).init(jax.random.key(0), **inputs)["params"]
    headed_model = Transformer(CFG.replace(source_head=8))
    headed = nn.unbox(headed_model.init(jax.random.key(1), **inputs)["params"])
    assert set(headed) - set(plain) == {"source_head"}
    warm = dict(plain, source_head=headed["source_head"])
    a = np.asarray(Transformer(CFG).apply({"params": plain}, **inputs))
    np.testing.assert_array_equal(a, np.asarray(headed_model.apply({"params": warm}, **inputs)))

    # Once its last layer is not zero, the logits depend on the source tokens through it too:
    # the same inputs with other source tokens move the headed model more than the plain one.
    trained = dict(warm)
    fc2 = dict(warm["source_head"]["fc2"])
    fc2["kernel"] = jax.random.normal(jax.random.key(2), fc2["kernel"].shape)
    trained["source_head"] = dict(warm["source_head"], fc2=fc2)
    b = np.asarray(headed_model.apply({"params": trained}, **inputs))
    assert np.abs(b - a).max() > 1e-3
    no_source = dict(inputs, source_tokens=None)
    np.testing.assert_array_equal(
        np.asarray(headed_model.apply({"params": trained}, **no_source)),
        np.asarray(Transformer(CFG).apply({"params": plain}, **no_source)),
    )


def test_source_head_is_checked_and_refuses_the_official_export():
    with pytest.raises(ValueError, match="source_head"):
        CFG.replace(source_head=-1)
    with pytest.raises(ValueError, match="source_head"):
        CFG.replace(source_head=16).to_official_dict()
