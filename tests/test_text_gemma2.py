"""Gemma 2: parity with the transformers fixture (padded row included), export, key errors, math."""

import dataclasses
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from editmgt_jax.checkpoint import load_gemma2, save_gemma2
from editmgt_jax.checkpoint.convert.table import ConversionError
from editmgt_jax.models.text.gemma2 import Gemma2, gemma_rms_norm
from editmgt_jax.models.text.layers import causal_mask, multi_head_attention, softcap
from tests.fixtures_path import fixtures_dir

TOL = 1e-4
FOLDER = fixtures_dir("text", "gemma2_tiny")


@pytest.fixture(scope="module")
def gemma():
    return load_gemma2(FOLDER)


@pytest.fixture(scope="module")
def io():
    return dict(np.load(os.path.join(FOLDER, "io.npz")))


def _run(model, params, io):
    apply = jax.jit(model.apply)
    ids, mask = io["input_ids"].astype(np.int32), io["attention_mask"].astype(np.int32)
    return apply({"params": params}, ids, mask)


def test_matches_fixture_including_padded_row(gemma, io):
    model, params = gemma
    assert io["attention_mask"][1].sum() == 18  # row 1 is right-padded
    out = _run(model, params, io)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    for name, ours in (
        ("hidden_states_m2", out.hidden_states[-2]),
        ("hidden_states_last", out.hidden_states[-1]),
        ("logits", out.logits),
    ):
        np.testing.assert_allclose(np.asarray(ours), io[name], atol=TOL, rtol=0, err_msg=name)


def test_sliding_window_is_used(gemma, io):
    # With a window as long as the text every layer is global: the result must change.
    model, params = gemma
    wide = Gemma2(dataclasses.replace(model.config, sliding_window=64))
    out = _run(wide, params, io)
    assert np.abs(np.asarray(out.hidden_states[-2]) - io["hidden_states_m2"]).max() > 1e-3


def test_no_logits_when_not_asked(gemma, io):
    model, params = gemma
    apply = jax.jit(lambda p, ids: model.apply({"params": p}, ids, None, return_logits=False))
    out = apply(params, io["input_ids"][:1, :4])
    assert out.logits is None and out.hidden_states[-2].shape == (1, 4, 48)


def test_round_trip_is_bit_exact(gemma, tmp_path):
    model, params = gemma
    save_gemma2(str(tmp_path), model, params)
    original = load_file(os.path.join(FOLDER, "model.safetensors"))
    exported = load_file(str(tmp_path / "model.safetensors"))
    assert sorted(exported) == sorted(original)
    for key, value in original.items():
        np.testing.assert_array_equal(exported[key], value, err_msg=key)
    again, _ = load_gemma2(str(tmp_path))
    assert again.config == model.config


def _write(tmp_path, state):
    shutil.copy(os.path.join(FOLDER, "config.json"), tmp_path)
    save_file(state, str(tmp_path / "model.safetensors"))
    return str(tmp_path)


def test_bare_model_layout_and_tied_head(gemma, tmp_path):
    _, params = gemma
    state = load_file(os.path.join(FOLDER, "model.safetensors"))
    bare = {k.removeprefix("model."): v for k, v in state.items()}
    bare["lm_head.weight"] = state["model.embed_tokens.weight"]  # a stored copy of the tied head
    _, loaded = load_gemma2(_write(tmp_path, bare))
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, params)


def test_tied_head_that_differs_raises(tmp_path):
    state = load_file(os.path.join(FOLDER, "model.safetensors"))
    state["lm_head.weight"] = state["model.embed_tokens.weight"] + 1
    with pytest.raises(ValueError, match="tie_word_embeddings"):
        load_gemma2(_write(tmp_path, state))


def test_bad_keys_raise_with_full_list(tmp_path):
    state = load_file(os.path.join(FOLDER, "model.safetensors"))
    del state["model.layers.3.post_feedforward_layernorm.weight"]
    state["model.layers.0.self_attn.k_proj.bias"] = np.zeros(32, np.float32)
    state["model.layers.1.self_attn.k_proj.weight"] = np.zeros((64, 48), np.float32)
    with pytest.raises(ConversionError) as err:
        load_gemma2(_write(tmp_path, state))
    assert err.value.missing == ["model.layers.3.post_feedforward_layernorm.weight"]
    assert err.value.unexpected == ["model.layers.0.self_attn.k_proj.bias"]
    assert err.value.misshaped == [("model.layers.1.self_attn.k_proj.weight", (64, 48), (32, 48))]


# --- the math -------------------------------------------------------------------------------------


def test_sliding_causal_mask_keeps_window_keys_including_self():
    mask = np.asarray(causal_mask(6, sliding_window=3))[0, 0]
    assert mask[5].tolist() == [False, False, False, True, True, True]
    assert mask[1].tolist() == [True, True, False, False, False, False]
    assert np.asarray(causal_mask(4))[0, 0].sum() == 10


def test_gemma_rms_norm_scales_by_one_plus_weight():
    out = gemma_rms_norm(np.array([[3.0, 4.0]]), np.array([0.0, 1.0]), eps=0.0)
    rms = np.sqrt(12.5)
    np.testing.assert_allclose(np.asarray(out), [[3 / rms, 2 * 4 / rms]], rtol=1e-6)


@jax.jit
def _attention_variants(q, k, v):
    k2, v2 = jnp.repeat(k, 2, axis=2), jnp.repeat(v, 2, axis=2)
    grouped = multi_head_attention(q, k, v, None, scale=1.0)
    repeated = multi_head_attention(q, k2, v2, None, scale=1.0)
    capped = multi_head_attention(q, k, v, None, scale=1.0, logit_cap=2.0)
    logits = softcap(jnp.einsum("bqhd,bkhd->bhqk", q, k2), 2.0)
    manual = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits), v2)
    return grouped, repeated, capped, manual


def test_grouped_heads_equal_repeated_kv_and_softcap_applies():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(1, 5, 4, 8)).astype(np.float32) * 4
    k = rng.normal(size=(1, 5, 2, 8)).astype(np.float32) * 4
    v = rng.normal(size=(1, 5, 2, 8)).astype(np.float32)
    grouped, repeated, capped, manual = map(np.asarray, _attention_variants(q, k, v))
    np.testing.assert_allclose(grouped, repeated, atol=1e-5)
    np.testing.assert_allclose(capped, manual, atol=1e-5)
    assert np.abs(capped - grouped).max() > 1e-2
