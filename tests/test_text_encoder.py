"""The frozen encoder API: CLIP_Gemma2 from a released-layout folder, against both fixtures.

Word-level tokenizers stand in for the real ones (no CLIP/Gemma vocabulary ships with the
fixtures): word `c<i>` is CLIP id i and `g<i>` Gemma id i, and each tokenizer drops the other's
words, so one instruction reproduces the fixture ids for both encoders.
"""

import os
import shutil

import jax
import numpy as np
import pytest
import tokenizers
from tokenizers import models, normalizers, pre_tokenizers, processors

from editmgt_jax.checkpoint import clip_gemma2_encoder
from editmgt_jax.models.text import TextEncoder
from tests.fixtures_path import fixtures_dir

TOL = 1e-4


def _word_tokenizer(prefix: str, other: str, size: int, specials: list[tuple[str, int]]):
    tok = tokenizers.Tokenizer(
        models.WordLevel({f"{prefix}{i}": i for i in range(size)}, unk_token=f"{prefix}0")
    )
    tok.normalizer = normalizers.Replace(tokenizers.Regex(rf"{other}\d+"), "")
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    template = " ".join([specials[0][0], "$A"] + [s for s, _ in specials[1:]])
    tok.post_processor = processors.TemplateProcessing(single=template, special_tokens=specials)
    return tok


@pytest.fixture(scope="module")
def released_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("editmgt")
    shutil.copytree(fixtures_dir("text", "clip_tiny"), root / "text_encoder")
    shutil.copytree(fixtures_dir("text", "gemma2_tiny"), root / "llm_encoder")
    for name, tok in (
        ("tokenizer", _word_tokenizer("c", "g", 1000, [("c998", 998), ("c999", 999)])),
        ("llm_tokenizer", _word_tokenizer("g", "c", 512, [("g2", 2)])),
    ):
        os.makedirs(root / name)
        tok.save(str(root / name / "tokenizer.json"))
    return str(root)


def _instruction(clip_ids, gemma_ids):
    clip_words = [f"c{i}" for i in clip_ids[1 : list(clip_ids).index(999)]]
    return " ".join(clip_words + [f"g{i}" for i in gemma_ids[1:]])


def test_clip_gemma2_matches_fixtures(released_folder):
    clip_io = np.load(fixtures_dir("text", "clip_tiny", "io.npz"))
    gemma_io = np.load(fixtures_dir("text", "gemma2_tiny", "io.npz"))
    lengths = gemma_io["attention_mask"].sum(axis=1)  # 24 and 18
    texts = [
        _instruction(clip_io["input_ids"][r], gemma_io["input_ids"][r, : lengths[r]])
        for r in range(2)
    ]
    encoder = clip_gemma2_encoder(released_folder, gemma_device=jax.devices("cpu")[0])
    assert isinstance(encoder, TextEncoder)
    assert (encoder.states_dim, encoder.pooled_dim, encoder.max_length) == (48, 32, 256)
    np.testing.assert_array_equal(encoder.clip_tokenizer(texts).input_ids, clip_io["input_ids"])
    out = encoder.encode(texts)
    assert out.states.shape == (2, 256, 48) and out.pooled.shape == (2, 32)
    np.testing.assert_array_equal(np.asarray(out.mask).sum(axis=1), lengths)
    np.testing.assert_allclose(np.asarray(out.pooled), clip_io["text_embeds"], atol=TOL, rtol=0)
    # The official path gives Gemma no attention mask; causal attention keeps the real tokens'
    # states independent of the padding that follows them.
    for r in range(2):
        n = lengths[r]
        np.testing.assert_allclose(
            np.asarray(out.states[r, :n]), gemma_io["hidden_states_m2"][r, :n], atol=TOL, rtol=0
        )


def test_clip_gemma2_errors(released_folder, tmp_path):
    encoder = clip_gemma2_encoder(released_folder)
    with pytest.raises(ValueError, match="empty"):
        encoder.encode([])
    shutil.copytree(os.path.join(released_folder, "text_encoder"), tmp_path / "text_encoder")
    with pytest.raises(FileNotFoundError, match="llm_encoder"):
        clip_gemma2_encoder(str(tmp_path))
