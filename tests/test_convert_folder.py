"""launch.convert / launch.export on a miniature released EditMGT folder made from the fixtures.

The four parity fixtures (official_tiny, official_vq, text/clip_tiny, text/gemma2_tiny) fit
together; `released_folder` lays them out as the released model is (fixtures README). Checks:
convert -> bundle equal to the direct loaders; the bundle edits; missing parts and bad keys are
listed; convert -> export is bit-exact; bf16 storage; the StableHLO sampler reproduces `decode`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import jax
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from editmgt_jax.checkpoint import folder, load_clip_text, load_gemma2, load_vq
from editmgt_jax.checkpoint.bundle import load_bundle, read_manifest
from editmgt_jax.checkpoint.convert.from_torch import load_transformer
from editmgt_jax.checkpoint.convert.table import ConversionError, flatten
from editmgt_jax.editor import Editor
from editmgt_jax.sampling import export
from editmgt_jax.sampling.decode import decode, make_inputs
from tests.fixtures_path import fixtures_dir
from tests.released_layout import LAYOUT, released_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    return released_folder(tmp_path_factory.mktemp("released") / "EditMGT")


@pytest.fixture(scope="module")
def bundle_path(released, tmp_path_factory):
    """The miniature converted by the command line (float32)."""
    out = str(tmp_path_factory.mktemp("ckpt") / "editmgt")
    result = subprocess.run(
        [sys.executable, "-m", "launch.convert", "--from_torch", released, "--out", out],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["out"] == out and report["warnings"] == []
    assert report["params"]["transformer"] > 0 and report["bundle_bytes"] > 0
    return out


def assert_trees_equal(ours, theirs):
    ours, theirs = flatten(jax.device_get(ours)), flatten(jax.device_get(theirs))
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        got = np.asarray(ours[key])
        assert got.dtype == np.asarray(value).dtype and got.shape == np.shape(value), key
        np.testing.assert_array_equal(got, np.asarray(value), err_msg=key)


def test_bundle_equals_the_direct_loaders(bundle_path, released):
    bundle = load_bundle(bundle_path)
    cfg, params = load_transformer(released)
    assert bundle.transformer_config == cfg.replace(param_dtype="float32")
    assert_trees_equal(bundle.transformer_params, params)
    assert_trees_equal(bundle.vq_params, load_vq(os.path.join(released, "vqvae"))[1])
    assert_trees_equal(
        bundle.text_params["clip"], load_clip_text(os.path.join(released, "text_encoder"))[1]
    )
    assert_trees_equal(
        bundle.text_params["gemma"], load_gemma2(os.path.join(released, "llm_encoder"))[1]
    )
    meta = bundle.metadata
    assert meta["converted_from"] == "official" and meta["source_folder"] == released
    pipeline = bundle.pipeline
    assert (pipeline["resolution"], pipeline["steps"], pipeline["guidance"]) == (1024, 16, 6.0)
    assert pipeline["reference_strength"] == 1.1
    # Block 30 of the released 42 is moved to the same depth of this 4-block model.
    assert pipeline["capture_blocks"] == [2]
    names = sorted(os.listdir(bundle_path))
    assert names == [
        "bundle.json",
        "official",
        "text_encoder.safetensors",
        "tokenizers",
        "transformer.safetensors",
        "vq.safetensors",
    ]


@pytest.fixture(scope="module")
def editor(bundle_path):
    return Editor.from_bundle(bundle_path)


def test_converted_bundle_edits(editor):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    results = editor.edit(
        images,
        ["make the circle blue", "make it green"],
        seeds=[1, 2],
        steps=2,
        resolution=64,
        hold_threshold=0.3,
        batch_size=2,
    )
    for result, image in zip(results, images, strict=True):
        assert result.image.shape == image.shape
        # 64 px / 16 px per VQ token; the same (batch, grid, steps) as the StableHLO test below.
        assert result.tokens.shape == result.source_tokens.shape == (4, 4)


def test_export_to_torch_is_bit_exact(bundle_path, released, tmp_path):
    out = str(tmp_path / "EditMGT_again")
    report = folder.export_to_torch(bundle_path, out)
    assert report["parts"]["editmgt"] > 0
    for dest, src in LAYOUT.items():
        written, original = os.path.join(out, dest), fixtures_dir(*src.split("/"))
        if dest.endswith(".json"):
            with open(written) as f, open(original) as g:
                assert json.load(f) == json.load(g), dest
            continue
        theirs, ours = load_file(original), load_file(written)
        assert sorted(ours) == sorted(theirs), dest
        for key, value in theirs.items():
            assert ours[key].dtype == value.dtype and ours[key].shape == value.shape, key
            np.testing.assert_array_equal(ours[key], value, err_msg=f"{dest}: {key}")
    for rel in (
        "tokenizer/tokenizer.json",
        "llm_tokenizer/special_tokens_map.json",
        "model_index.json",
        "scheduler/scheduler_config.json",
    ):
        with open(os.path.join(out, rel), "rb") as f, open(os.path.join(released, rel), "rb") as g:
            assert f.read() == g.read(), rel
    with pytest.raises(FileExistsError, match="exists"):
        folder.export_to_torch(bundle_path, out)


def test_source_dtypes_and_weightless_keys_round_trip(released, tmp_path):
    """A bfloat16 CLIP with the position_ids buffer, and a Gemma that stores its tied lm_head:
    converted to float32 and exported, every tensor comes back with its key, dtype and bits."""
    source = shutil.copytree(released, tmp_path / "source")
    clip_file = str(source / "text_encoder" / "model.safetensors")
    clip = {k: v.astype(ml_dtypes.bfloat16) for k, v in load_file(clip_file).items()}
    clip["text_model.embeddings.position_ids"] = np.arange(77, dtype=np.int64)[None]
    save_file(clip, clip_file)
    gemma_file = str(source / "llm_encoder" / "model.safetensors")
    gemma = load_file(gemma_file)
    gemma["lm_head.weight"] = gemma["model.embed_tokens.weight"].copy()
    save_file(gemma, gemma_file)
    path = folder.save_converted(folder.convert_folder(str(source)), str(tmp_path / "ckpt"))
    out = folder.export_to_torch(path, str(tmp_path / "back"))["out"]
    for rel, original in (("text_encoder", clip), ("llm_encoder", gemma)):
        back = load_file(os.path.join(out, rel, "model.safetensors"))
        assert sorted(back) == sorted(original), rel
        for key, value in original.items():
            assert back[key].dtype == value.dtype and back[key].shape == value.shape, key
            np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_missing_parts_are_all_named(released, tmp_path):
    broken = shutil.copytree(released, tmp_path / "broken")
    shutil.rmtree(broken / "vqvae")
    os.remove(broken / "llm_encoder" / "model.safetensors")
    with pytest.raises(FileNotFoundError) as info:
        folder.convert_folder(str(broken))
    message = str(info.value)
    assert f"{broken}/vqvae/" in message and f"{broken}/llm_encoder/" in message
    assert "no *.safetensors weights" in message and "text_encoder" not in message


def test_bad_keys_are_listed_by_part(released, tmp_path):
    broken = shutil.copytree(released, tmp_path / "broken")
    clip_file = broken / "text_encoder" / "model.safetensors"
    state = load_file(str(clip_file))
    state["text_projection.weight"] = np.zeros((32, 31), np.float32)
    state["text_model.extra.weight"] = np.zeros(3, np.float32)
    save_file(state, str(clip_file))
    vq_file = broken / "vqvae" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(vq_file))
    del state["quant_conv.bias"]
    save_file(state, str(vq_file))
    with pytest.raises(ConversionError) as info:
        folder.convert_folder(str(broken))
    err = info.value
    assert err.missing == ["vqvae: quant_conv.bias"]
    assert err.unexpected == ["text_encoder: text_model.extra.weight"]
    assert err.misshaped == [("text_encoder: text_projection.weight", (32, 31), (32, 32))]
    assert "text_projection.weight has shape (32, 31), expected (32, 32)" in str(err)


def test_bfloat16_and_no_tokenizers(tmp_path):
    source = released_folder(tmp_path / "EditMGT", with_tokenizers=False)
    converted = folder.convert_folder(source, dtype="bfloat16")
    assert any("Gemma tokenizer" in w for w in converted.warnings)
    path = folder.save_converted(converted, str(tmp_path / "bf16"))
    spec = read_manifest(path)["text_encoder"]
    assert spec["gemma_tokenizer"] is None and spec["clip_tokenizer"] == "open_clip"
    for name, float_dtype in (
        ("transformer.safetensors", "bfloat16"),
        ("text_encoder.safetensors", "bfloat16"),
        ("vq.safetensors", "float32"),  # the VQ stays float32
    ):
        dtypes = {str(v.dtype) for v in load_file(os.path.join(path, name)).values()}
        assert dtypes == {float_dtype}, name
    with pytest.raises(ValueError, match="no Gemma tokenizer.*--gemma_tokenizer"):
        Editor.from_bundle(path)
    # Export: "source" casts back to the folder's float32 (values rounded to bf16), "stored" not.
    out = folder.export_to_torch(path, str(tmp_path / "back"))["out"]
    original = load_file(os.path.join(source, "llm_encoder", "model.safetensors"))
    back = load_file(os.path.join(out, "llm_encoder", "model.safetensors"))
    key = "model.embed_tokens.weight"
    assert back[key].dtype == np.float32
    np.testing.assert_allclose(back[key], original[key], rtol=1e-2, atol=1e-2)
    stored = folder.export_to_torch(path, str(tmp_path / "stored"), dtype="stored")["out"]
    back = load_file(os.path.join(stored, "editmgt", "diffusion_pytorch_model.safetensors"))
    assert {str(v.dtype) for v in back.values()} == {"bfloat16"}


def test_stablehlo_sampler_reproduces_decode(bundle_path, editor, tmp_path):
    bundle = load_bundle(bundle_path)
    cfg, pipeline = bundle.transformer_config, bundle.pipeline
    batch, grid, steps, text_len = 2, (4, 4), 2, 256
    path = str(tmp_path / "sampler.stablehlo")
    report = export.export_bundle_sampler(
        bundle_path, path, grid=grid, batch=batch, steps=steps, text_len=text_len
    )
    assert report["bytes"] == os.path.getsize(path)
    with open(path + ".json") as f:
        assert json.load(f)["inputs"]["source_tokens"] == dict(shape=[2, 4, 4], dtype="int32")

    rng = np.random.default_rng(0)
    d, p = cfg.joint_attention_dim, cfg.pooled_projection_dim
    values = dict(
        source_tokens=rng.integers(0, cfg.codebook_size, (batch, *grid)).astype(np.int32),
        text_states=rng.normal(size=(batch, text_len, d)).astype(np.float32),
        pooled=rng.normal(size=(batch, p)).astype(np.float32),
        uncond_text_states=rng.normal(size=(batch, text_len, d)).astype(np.float32),
        uncond_pooled=rng.normal(size=(batch, p)).astype(np.float32),
        micro_conds=np.tile(np.float32([64, 64, 0, 0, 6]), (batch, 1)),
        guidance=np.float32([6.0, 1.0]),
        hold_threshold=np.float32([0.5, 0.0]),
        edit_mask=np.ones((batch, *grid), bool),
    )
    keys = jax.random.split(jax.random.key(7), batch)
    loaded = export.load_sampler(path)
    out = loaded(bundle.transformer_params, keys=keys, **values)

    # The sampler exactly as the Editor runs it (same model_fn object: its compile is reused).
    model_fn, decode_config, region_hold = export.sampler_settings(cfg, pipeline, steps, grid)
    assert decode_config == editor.decode_config(steps, grid) and region_hold
    model_fn = editor.model_fn(pipeline["reference_strength"], False)
    inputs = make_inputs(**values, mask_token_id=cfg.mask_token_id)
    want = decode(model_fn, inputs, keys, decode_config, params=editor.params)
    np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(want.tokens))
    np.testing.assert_array_equal(np.asarray(out.hold_mask), np.asarray(want.hold_mask))
    np.testing.assert_array_equal(np.asarray(out.scores), np.asarray(want.scores))
    assert np.asarray(out.tokens).max() < cfg.codebook_size  # every token decoded
    with pytest.raises(ValueError, match="edit_mask has shape"):
        loaded(
            bundle.transformer_params, keys=keys, **dict(values, edit_mask=np.ones((2, 8, 8), bool))
        )
