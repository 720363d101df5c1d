"""CLIP text tower: parity with the transformers fixture, exact export, key errors, BPE tokenizer."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from editmgt_jax.checkpoint import load_clip_text, save_clip_text
from editmgt_jax.checkpoint.convert.table import ConversionError
from editmgt_jax.models.text.clip import CLIPText, eos_positions
from editmgt_jax.models.text.tokenizer import (
    CLIP_BOS,
    CLIP_EOS,
    _byte_alphabet,
    clip_tokenizer_from_open_clip,
    tokenizer_from_folder,
)
from tests.fixtures_path import fixtures_dir

TOL = 1e-4
FOLDER = fixtures_dir("text", "clip_tiny")


@pytest.fixture(scope="module")
def clip():
    return load_clip_text(FOLDER)


@pytest.fixture(scope="module")
def io():
    return dict(np.load(os.path.join(FOLDER, "io.npz")))


def test_matches_fixture(clip, io):
    model, params = clip
    out = jax.jit(model.apply)({"params": params}, io["input_ids"].astype(np.int32))
    np.testing.assert_allclose(np.asarray(out.text_embeds), io["text_embeds"], atol=TOL, rtol=0)
    np.testing.assert_allclose(
        np.asarray(out.last_hidden_state), io["last_hidden_state"], atol=TOL, rtol=0
    )
    np.testing.assert_allclose(
        np.asarray(out.hidden_states[-2]), io["hidden_states_m2"], atol=TOL, rtol=0
    )
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1


def test_eos_pooling_rules():
    ids = jnp.array([[998, 5, 999, 0], [998, 999, 999, 3]])
    # Configured EOS id: its first position; legacy id 2: the highest id.
    assert eos_positions(ids, 999).tolist() == [2, 1]
    assert eos_positions(jnp.array([[5, 7, 900, 1]]), 2).tolist() == [2]


def test_causal_mask_matters(clip, io):
    # Later tokens must not change earlier states.
    model, params = clip
    ids = io["input_ids"][:1].astype(np.int32)
    changed = ids.copy()
    changed[0, 12:] = 5
    apply = jax.jit(model.apply)
    a = apply({"params": params}, ids).last_hidden_state
    b = apply({"params": params}, changed).last_hidden_state
    np.testing.assert_array_equal(np.asarray(a[:, :12]), np.asarray(b[:, :12]))
    assert np.abs(np.asarray(a[:, 12:] - b[:, 12:])).max() > 1e-3


def test_round_trip_is_bit_exact(clip, tmp_path):
    model, params = clip
    save_clip_text(str(tmp_path), model, params)
    original = load_file(os.path.join(FOLDER, "model.safetensors"))
    exported = load_file(str(tmp_path / "model.safetensors"))
    assert sorted(exported) == sorted(original)
    for key, value in original.items():
        assert exported[key].dtype == value.dtype
        np.testing.assert_array_equal(exported[key], value, err_msg=key)
    again, _ = load_clip_text(str(tmp_path))
    assert again.config == model.config


def test_bfloat16_checkpoint_round_trips_in_bfloat16(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    os.makedirs(src)
    shutil.copy(os.path.join(FOLDER, "config.json"), src)
    original = load_file(os.path.join(FOLDER, "model.safetensors"))
    bf16 = {k: v.astype(jnp.bfloat16) for k, v in original.items()}
    save_file(bf16, str(src / "model.safetensors"))
    model, params = load_clip_text(str(src), param_dtype=jnp.bfloat16)
    save_clip_text(str(out), model, params)
    exported = load_file(str(out / "model.safetensors"))
    for key, value in bf16.items():
        assert exported[key].dtype == value.dtype, key
        np.testing.assert_array_equal(exported[key].view(np.uint16), value.view(np.uint16))


def test_bad_keys_raise_with_full_list(tmp_path):
    shutil.copy(os.path.join(FOLDER, "config.json"), tmp_path)
    state = load_file(os.path.join(FOLDER, "model.safetensors"))
    del state["text_model.encoder.layers.1.mlp.fc1.bias"]
    del state["text_model.final_layer_norm.weight"]
    state["text_model.encoder.layers.7.mlp.fc1.bias"] = np.zeros(4, np.float32)
    state["text_model.encoder.layers.0.self_attn.q_proj.weight"] = np.zeros((32, 16), np.float32)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ConversionError) as err:
        load_clip_text(str(tmp_path))
    assert sorted(err.value.missing) == [
        "text_model.encoder.layers.1.mlp.fc1.bias",
        "text_model.final_layer_norm.weight",
    ]
    assert err.value.unexpected == ["text_model.encoder.layers.7.mlp.fc1.bias"]
    assert err.value.misshaped == [
        ("text_model.encoder.layers.0.self_attn.q_proj.weight", (32, 16), (32, 32))
    ]
    assert "text_model.final_layer_norm.weight" in str(err.value)


def test_without_projection_loads_as_clip_text_model(tmp_path):
    shutil.copy(os.path.join(FOLDER, "config.json"), tmp_path)
    state = load_file(os.path.join(FOLDER, "model.safetensors"))
    del state["text_projection.weight"]
    save_file(state, str(tmp_path / "model.safetensors"))
    model, params = load_clip_text(str(tmp_path))
    assert not model.config.with_projection and "text_projection" not in params
    out = jax.jit(model.apply)({"params": params}, jnp.array([[998, 4, 999]]))
    assert out.text_embeds is None and out.pooled.shape == (1, 32)


def test_bf16_params_run(clip, io):
    model, params = clip
    bf16 = CLIPText(model.config, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    params16 = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), params)
    out = jax.jit(bf16.apply)({"params": params16}, io["input_ids"].astype(np.int32))
    err = np.abs(np.asarray(out.text_embeds, np.float32) - io["text_embeds"]).max()
    assert err < 0.1 * np.abs(io["text_embeds"]).max()


# --- tokenizer ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def open_clip_tokenizer():
    return clip_tokenizer_from_open_clip(max_length=77)


def test_open_clip_vocabulary_gives_known_ids(open_clip_tokenizer):
    batch = open_clip_tokenizer(["a photo of a cat", ""])
    assert open_clip_tokenizer.tokenizer.get_vocab_size() == 49408
    # Well-known CLIP ids: <start>, a, photo, of, a, cat, <end>.
    assert batch.input_ids[0, :8].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407, 0]
    assert batch.input_ids[1, :3].tolist() == [49406, 49407, 0]
    assert batch.attention_mask.sum(axis=1).tolist() == [7, 2]
    assert batch.input_ids.shape == (2, 77)


def test_long_text_truncates_to_77_with_eos(open_clip_tokenizer):
    batch = open_clip_tokenizer(["red " * 200])
    assert batch.attention_mask.sum() == 77
    assert batch.input_ids[0, 0] == 49406 and batch.input_ids[0, -1] == 49407


def test_folder_vocab_and_merges_match_open_clip(open_clip_tokenizer, tmp_path):
    vocab = open_clip_tokenizer.tokenizer.get_vocab()
    import gzip

    from editmgt_jax.models.text.tokenizer import OPEN_CLIP_NUM_MERGES, open_clip_vocab_path

    with gzip.open(open_clip_vocab_path(), "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1 : OPEN_CLIP_NUM_MERGES + 1]
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"pad_token": "!"}))
    from_folder = tokenizer_from_folder(str(tmp_path), 77)
    assert from_folder.pad_id == vocab["!"] == 0
    texts = ["Make the RED ball blue!!", "don't  add 3 cats", "zebra-striped café"]
    a, b = open_clip_tokenizer(texts), from_folder(texts)
    np.testing.assert_array_equal(a.input_ids, b.input_ids)
    np.testing.assert_array_equal(a.attention_mask, b.attention_mask)
    assert vocab[CLIP_BOS] == 49406 and vocab[CLIP_EOS] == 49407
    assert len(_byte_alphabet()) == len(set(_byte_alphabet())) == 256


def test_clip_alone_encoder_gives_the_second_to_last_states_and_the_projected_pool(clip, io):
    """CLIP alone (Meissonic's conditioning): states = hidden_states[-2], pooled = text_embeds,
    from `encode` and from the pure `apply_tokens` that training jits on a mesh."""
    from editmgt_jax.models.text.encoder import CLIPEncoder

    model, params = clip

    class FixedIds:  # the fixture's own ids, whatever the texts
        max_length = io["input_ids"].shape[1]

        def __call__(self, texts):
            ids = np.asarray(io["input_ids"], np.int32)[: len(texts)]
            return type("Batch", (), dict(input_ids=ids, attention_mask=np.ones_like(ids)))

    encoder = CLIPEncoder(model, params, FixedIds())
    out = encoder.encode(["a", "b"])
    np.testing.assert_allclose(out.states, io["hidden_states_m2"], atol=TOL)
    np.testing.assert_allclose(out.pooled, io["text_embeds"], atol=TOL)
    states, pooled = encoder.apply_tokens(encoder.frozen_params, encoder.token_arrays(["a", "b"]))
    np.testing.assert_allclose(states, io["hidden_states_m2"], atol=TOL)
    np.testing.assert_allclose(pooled, io["text_embeds"], atol=TOL)
