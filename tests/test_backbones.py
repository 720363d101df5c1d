"""Metric backbones: parity with the torch fixtures, other shapes against an independent numpy
forward (which itself matches the fixtures), full CLIPModel folders, key and file errors."""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from editmgt_jax.checkpoint.convert.table import ConversionError, flatten, to_theirs, unflatten
from editmgt_jax.checkpoint.convert.text_clip import clip_text_rules, param_shapes
from editmgt_jax.evaluation.backbones import init_backbone, load_backbone, save_backbone
from editmgt_jax.evaluation.backbones.clip_text import CLIPTextTower
from editmgt_jax.evaluation.backbones.encoder import bicubic_matrix
from editmgt_jax.models.text.clip import CLIPText, CLIPTextConfig
from editmgt_jax.models.text.tokenizer import TextTokenizer
from tests import vision_reference
from tests.fixtures_path import fixtures_dir
from tests.released_layout import word_tokenizer

TOL = 1e-4
FIXTURES = {"clip": "clip_vision_tiny", "dino_vit": "dino_vit_tiny", "dinov2": "dinov2_tiny"}
# The output each kind's `embed` must reproduce, by its fixture name.
EMBED_KEY = {"clip": "image_embeds", "dino_vit": "cls", "dinov2": "pooler_output"}


def nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


def nchw(x):
    return np.transpose(x, (0, 3, 1, 2))


def fixture(kind):
    folder = fixtures_dir("vision", FIXTURES[kind])
    return folder, dict(np.load(os.path.join(folder, "io.npz")))


@pytest.fixture(scope="module")
def loaded():
    return {kind: load_backbone(fixture(kind)[0]) for kind in FIXTURES}


@pytest.mark.parametrize("kind", sorted(FIXTURES))
def test_parity_with_torch_fixtures(loaded, kind):
    _, io = fixture(kind)
    backbone = loaded[kind]
    pixels = nhwc(io["pixel_values"])
    out = backbone.outputs(pixels)
    np.testing.assert_allclose(out.last_hidden_state, io["last_hidden_state"], atol=TOL, rtol=0)
    np.testing.assert_allclose(backbone.embed(pixels), io[EMBED_KEY[kind]], atol=TOL, rtol=0)
    if "last_layer_keys" in io:
        np.testing.assert_allclose(
            backbone.last_layer_keys(pixels), io["last_layer_keys"], atol=TOL, rtol=0
        )
    assert backbone.describe()["embedding"] == EMBED_KEY[kind]


@pytest.mark.parametrize("kind", sorted(FIXTURES))
def test_numpy_reference_matches_torch_fixtures(kind):
    folder, io = fixture(kind)
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    ref = vision_reference.forward(
        kind, config, load_file(os.path.join(folder, "model.safetensors")), io["pixel_values"]
    )
    for name in ("last_hidden_state", EMBED_KEY[kind], "last_layer_keys"):
        if name in io:
            np.testing.assert_allclose(ref[name], io[name], atol=TOL, rtol=0, err_msg=name)


def test_bicubic_matches_hand_computed_pytorch_values():
    # F.interpolate([0, 1], size=4, mode="bicubic", align_corners=False): A = -0.75 overshoots.
    np.testing.assert_allclose(
        bicubic_matrix(2, 4) @ np.array([0.0, 1.0]),
        [-0.10546875, 0.2265625, 0.7734375, 1.10546875],
        atol=1e-12,
    )
    np.testing.assert_array_equal(bicubic_matrix(5, 5), np.eye(5))
    for n_in, n_out in ((4, 7), (6, 3), (3, 8)):
        np.testing.assert_allclose(bicubic_matrix(n_in, n_out).sum(1), 1.0, atol=1e-12)
        grid = np.random.default_rng(n_in).normal(size=(n_in, n_in, 2))
        loop = vision_reference.torch_bicubic(grid, n_out, n_out)
        np.testing.assert_allclose(
            np.einsum(
                "ai,bj,ijd->abd", bicubic_matrix(n_in, n_out), bicubic_matrix(n_in, n_out), grid
            ),
            loop,
            atol=1e-12,
        )


# Configs of other shapes: every field that changes the math moves off the fixtures' values.
OTHER_SHAPES = {
    "clip": dict(
        model_type="clip_vision_model",
        hidden_size=24,
        intermediate_size=40,
        num_hidden_layers=3,
        num_attention_heads=3,
        image_size=20,
        patch_size=5,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        projection_dim=12,
        num_channels=3,
    ),
    "dino_vit": dict(
        model_type="vit",
        hidden_size=48,
        intermediate_size=36,
        num_hidden_layers=1,
        num_attention_heads=6,
        image_size=24,
        patch_size=6,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        qkv_bias=False,
        num_channels=3,
    ),
    "dinov2": dict(
        model_type="dinov2",
        hidden_size=16,
        mlp_ratio=3,
        num_hidden_layers=3,
        num_attention_heads=2,
        image_size=28,
        patch_size=7,
        hidden_act="gelu_new",
        layer_norm_eps=1e-4,
        qkv_bias=True,
        layerscale_value=0.3,
        use_swiglu_ffn=False,
        num_channels=3,
    ),
    "dinov2_swiglu": dict(
        model_type="dinov2",
        hidden_size=24,
        mlp_ratio=4,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=16,
        patch_size=4,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        layerscale_value=0.7,
        use_swiglu_ffn=True,
        num_channels=3,
    ),
}


# Input sizes (height, width) checked per case by default: each interpolates the position
# embeddings, two are non-square, two have sides that are not multiples of the patch size.
DEFAULT_SIZES = {
    "clip": (15, 27),
    "dino_vit": (36, 36),
    "dinov2": (21, 37),
    "dinov2_swiglu": (26, 26),
}


def _sizes(case, extended):
    size, p = OTHER_SHAPES[case]["image_size"], OTHER_SHAPES[case]["patch_size"]
    if not extended:
        return [DEFAULT_SIZES[case]]
    return [(size, size), (size + 2 * p, size + 2 * p), (size - p, size + p + 2)]


def _check_other_shapes(tmp_path, case, sizes):
    config = OTHER_SHAPES[case]
    kind = {"clip_vision_model": "clip", "vit": "dino_vit"}.get(config["model_type"], "dinov2")
    made = init_backbone(config, seed=len(case))
    folder = str(tmp_path / case)
    save_backbone(folder, made)
    loaded = load_backbone(folder)
    assert loaded.kind == kind and loaded.config == made.config
    for path, value in flatten(jax.device_get(made.params)).items():
        np.testing.assert_array_equal(flatten(jax.device_get(loaded.params))[path], value)
    state = load_file(os.path.join(folder, "model.safetensors"))
    rng = np.random.default_rng(0)
    for height, width in sizes:
        pixels = rng.normal(size=(2, height, width, 3)).astype(np.float32)
        ref = vision_reference.forward(kind, config, state, nchw(pixels))
        out = loaded.outputs(pixels)
        np.testing.assert_allclose(
            out.last_hidden_state, ref["last_hidden_state"], atol=TOL, rtol=0
        )
        np.testing.assert_allclose(loaded.embed(pixels), ref[EMBED_KEY[kind]], atol=TOL, rtol=0)
        np.testing.assert_allclose(out.last_layer_keys, ref["last_layer_keys"], atol=TOL, rtol=0)


@pytest.mark.parametrize("case", sorted(OTHER_SHAPES))
def test_other_shapes_round_trip_and_match_reference(tmp_path, case):
    _check_other_shapes(tmp_path, case, _sizes(case, extended=False))


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(OTHER_SHAPES))
def test_other_shapes_at_more_input_sizes(tmp_path, case):
    # The trained size; a larger square; a non-square input whose sides are not multiples of
    # the patch size (interpolated, the remainder dropped).
    _check_other_shapes(tmp_path, case, _sizes(case, extended=True))


def _text_tower(projection_dim, seed=0):
    cfg = CLIPTextConfig(
        vocab_size=40,
        hidden_size=16,
        intermediate_size=24,
        projection_dim=projection_dim,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=12,
        hidden_act="quick_gelu",
        bos_token_id=38,
        eos_token_id=39,
    )
    model = CLIPText(cfg)
    rng = np.random.default_rng(seed)  # numpy draws: no init compile
    params = unflatten(
        {
            path: (rng.normal(size=shape) / np.sqrt(shape[0] if len(shape) > 1 else 10)).astype(
                np.float32
            )
            for path, shape in param_shapes(model).items()
        }
    )
    return cfg, model, params


def write_full_clip(folder, vision_config, vision_state, projection_dim, seed=0):
    """A full CLIPModel folder: the given vision half, a random text half, a word tokenizer."""
    cfg, model, params = _text_tower(projection_dim, seed)
    text_state = to_theirs(clip_text_rules(cfg), jax.device_get(params))
    os.makedirs(folder, exist_ok=True)
    config = dict(
        model_type="clip",
        projection_dim=projection_dim,
        vision_config={k: v for k, v in vision_config.items() if k != "projection_dim"},
        text_config={**cfg.to_transformers(), "eos_token_id": 39, "bos_token_id": 38},
    )
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    state = {**vision_state, **{k: np.asarray(v) for k, v in text_state.items()}}
    state["logit_scale"] = np.array(2.6592, np.float32)
    save_file(state, os.path.join(folder, "model.safetensors"))
    tok = word_tokenizer({"<pad>": 0, "<unk>": 3, "<bos>": 38, "<eos>": 39}, "<bos>", "<eos>")
    tok.save(os.path.join(folder, "tokenizer.json"))
    return model, params


def test_full_clip_folder_loads_vision_half_and_text_half(tmp_path):
    fixture_folder, io = fixture("clip")
    with open(os.path.join(fixture_folder, "config.json")) as f:
        vision_config = json.load(f)
    vision_state = load_file(os.path.join(fixture_folder, "model.safetensors"))
    folder = str(tmp_path / "clip_full")
    model, params = write_full_clip(
        folder, vision_config, vision_state, vision_config["projection_dim"]
    )
    backbone = load_backbone(folder)
    assert backbone.kind == "clip" and isinstance(backbone.text, CLIPTextTower)
    np.testing.assert_allclose(
        backbone.embed(nhwc(io["pixel_values"])), io["image_embeds"], atol=TOL, rtol=0
    )
    texts = ["make it red", "the blue circle"]
    ids = backbone.text.tokenizer(texts)
    assert isinstance(backbone.text.tokenizer, TextTokenizer) and ids.input_ids[0, 0] == 38
    direct = model.apply({"params": params}, ids.input_ids, ids.attention_mask).text_embeds
    np.testing.assert_allclose(backbone.text.embed(texts), np.asarray(direct), atol=1e-5, rtol=0)
    # The round trip writes the text half back too.
    again = str(tmp_path / "again")
    save_backbone(again, backbone)
    shutil.copyfile(os.path.join(folder, "tokenizer.json"), os.path.join(again, "tokenizer.json"))
    reloaded = load_backbone(again)
    np.testing.assert_allclose(reloaded.text.embed(texts), backbone.text.embed(texts), atol=1e-6)


def _copy_fixture(tmp_path, kind):
    folder = str(tmp_path / kind)
    shutil.copytree(fixture(kind)[0], folder)
    return folder, os.path.join(folder, "model.safetensors")


def test_bad_tensors_are_listed_by_name(tmp_path):
    folder, weights = _copy_fixture(tmp_path, "dino_vit")
    state = load_file(weights)
    del state["encoder.layer.1.attention.attention.key.weight"]
    state["embeddings.position_embeddings"] = state["embeddings.position_embeddings"][:, :10]
    state["encoder.layer.0.surprise"] = np.zeros(3, np.float32)
    os.remove(weights)
    save_file(state, weights)
    with pytest.raises(ConversionError) as err:
        load_backbone(folder)
    message = str(err.value)
    assert "encoder.layer.1.attention.attention.key.weight" in message
    assert "embeddings.position_embeddings has shape (1, 10, 32), expected (1, 17, 32)" in message
    assert "encoder.layer.0.surprise" in message


def test_a_config_that_disagrees_with_the_weights_is_named(tmp_path):
    folder, _ = _copy_fixture(tmp_path, "dinov2")
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        config = json.load(f)
    config["mlp_ratio"] = 3
    os.chmod(path, 0o644)
    with open(path, "w") as f:
        json.dump(config, f)
    with pytest.raises(
        ConversionError,
        match=r"encoder\.layer\.0\.mlp\.fc1\.weight has shape \(64, 32\), expected \(96, 32\)",
    ):
        load_backbone(folder)


def test_folder_errors(tmp_path):
    folder = str(tmp_path / "bin_only")
    os.makedirs(folder)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"model_type": "vit"}, f)
    with open(os.path.join(folder, "pytorch_model.bin"), "wb") as f:
        f.write(b"not read")
    with pytest.raises(FileNotFoundError, match="pytorch_model.bin.*only safetensors"):
        load_backbone(folder)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"model_type": "resnet"}, f)
    with pytest.raises(ValueError, match="model_type='resnet' is not a metric backbone"):
        load_backbone(folder)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_backbone(str(tmp_path / "absent"))
    # A CLIP vision folder without its projection cannot give image_embeds.
    clip_folder, weights = _copy_fixture(tmp_path, "clip")
    state = load_file(weights)
    del state["visual_projection.weight"]
    os.remove(weights)
    save_file(state, weights)
    with pytest.raises(ValueError, match="visual_projection.weight"):
        load_backbone(clip_folder)
    with pytest.raises(ValueError, match="hidden_act='tanh_glu' is not supported"):
        init_backbone({**OTHER_SHAPES["clip"], "hidden_act": "tanh_glu"})
