"""all-MiniLM-L6-v2 in Flax against the fixture made with the PyTorch model from the same package."""

import numpy as np
import pytest
from safetensors.numpy import save_file

from editmgt_jax.checkpoint import (
    load_minilm,
    minilm_encoder,
    minilm_folder,
    minilm_tokenizer,
    save_bert,
)
from editmgt_jax.checkpoint.convert.safetensors_io import read_state_dict
from editmgt_jax.checkpoint.convert.table import ConversionError
from editmgt_jax.models.text import MiniLMEncoder, TextEncoder
from editmgt_jax.models.text.layers import l2_normalize
from tests.fixtures_path import fixtures_dir

TOL = 1e-4


@pytest.fixture(scope="module")
def io():
    return dict(np.load(fixtures_dir("text", "minilm", "io.npz")))


@pytest.fixture(scope="module")
def minilm():
    return load_minilm()


@pytest.fixture(scope="module")
def encoder():
    return minilm_encoder(max_length=32)


def test_tokenizer_reproduces_fixture_ids(io):
    batch = minilm_tokenizer(max_length=32)(list(io["sentences"]))
    np.testing.assert_array_equal(batch.input_ids, io["input_ids"])
    np.testing.assert_array_equal(batch.attention_mask, io["attention_mask"])
    assert batch.input_ids.dtype == np.int32


def test_encoder_matches_fixture(encoder, io):
    assert isinstance(encoder, TextEncoder)
    assert (encoder.states_dim, encoder.pooled_dim, encoder.max_length) == (384, 384, 32)
    out = encoder.encode(list(io["sentences"]))
    assert out.states.shape == (4, 32, 384) and out.states.dtype == np.float32
    assert out.pooled.shape == (4, 384) and out.pooled.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(out.mask), io["attention_mask"])
    np.testing.assert_allclose(np.asarray(out.states), io["last_hidden_state"], atol=TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(out.pooled), io["mean_pooled"], atol=TOL, rtol=0)
    normalized = np.asarray(l2_normalize(out.pooled))
    np.testing.assert_allclose(normalized, io["normalized"], atol=TOL, rtol=0)


def test_normalized_pooling_option(io, minilm):
    model, params = minilm
    encoder = MiniLMEncoder(model, params, minilm_tokenizer(32), normalize_pooled=True)
    out = encoder.encode(list(io["sentences"][:2]))
    np.testing.assert_allclose(np.asarray(out.pooled), io["normalized"][:2], atol=TOL, rtol=0)


def test_empty_list_and_bare_string_raise(encoder):
    with pytest.raises(ValueError, match="empty"):
        encoder.encode([])
    with pytest.raises(TypeError, match="single string"):
        encoder.encode("make it blue")


def test_empty_string_is_cls_sep(encoder):
    out = encoder.encode(["", "make the red circle blue"])
    mask = np.asarray(out.mask)
    assert mask[0].tolist() == [1, 1] + [0] * 30
    ids = encoder.tokenizer([""]).input_ids[0]
    assert ids[:3].tolist() == [101, 102, 0]
    assert np.all(np.isfinite(np.asarray(out.pooled)))
    # The unconditional text differs from a real instruction.
    assert np.abs(np.asarray(out.pooled[0] - out.pooled[1])).max() > 1e-2


def test_long_text_is_truncated_with_sep(encoder):
    batch = encoder.tokenizer(["word " * 100])
    assert batch.attention_mask.sum() == 32 and batch.input_ids[0, -1] == 102


def test_round_trip_is_exact(tmp_path, minilm):
    model, params = minilm
    save_bert(str(tmp_path), model, params)
    original = read_state_dict(minilm_folder())
    exported = read_state_dict(str(tmp_path))
    for key, value in exported.items():
        np.testing.assert_array_equal(value, original[key], err_msg=key)
    unused = set(original) - set(exported)
    assert unused == {"embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"}


def test_bad_keys_raise_with_full_list(tmp_path, minilm):
    model, params = minilm
    save_bert(str(tmp_path), model, params)
    state = read_state_dict(str(tmp_path))
    del state["encoder.layer.2.output.dense.bias"]
    state["encoder.layer.9.extra.weight"] = np.zeros(3, np.float32)
    state["encoder.layer.0.intermediate.dense.weight"] = np.zeros((8, 384), np.float32)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ConversionError) as err:
        load_minilm(str(tmp_path))
    assert err.value.missing == ["encoder.layer.2.output.dense.bias"]
    assert err.value.unexpected == ["encoder.layer.9.extra.weight"]
    assert err.value.misshaped == [
        ("encoder.layer.0.intermediate.dense.weight", (8, 384), (1536, 384))
    ]
