"""The local patch tokenizer: ids depend on their own cell only, exact round trip of codebook
patches, folder save/load, the k-means fit, and the Editor on a PatchVQ bundle."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from editmgt_jax.checkpoint.convert.table import ConversionError
from editmgt_jax.checkpoint.convert.vq import load_vq, save_vq
from editmgt_jax.evaluation.edit_eval import paste_back_unchanged
from editmgt_jax.models.patch_vq import PatchVQ, PatchVQConfig, from_patches, to_patches
from editmgt_jax.models.tokenizer import tokenizer_config, tokenizer_module
from editmgt_jax.training.kmeans import fit_kmeans, unique_rows

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def patch_vq():
    rng = np.random.default_rng(0)
    config = PatchVQConfig(patch_size=4, num_vq_embeddings=32)
    codebook = rng.random((32, 48)).astype(np.float32)
    model = PatchVQ(config)
    params = {"codebook": jnp.asarray(codebook)}
    encode = jax.jit(lambda x: model.apply({"params": params}, x, method=model.encode_to_ids))
    decode = jax.jit(lambda i: model.apply({"params": params}, i, method=model.decode_ids))
    return model, params, encode, decode


def test_patches_round_trip_and_row_major_layout():
    images = jnp.arange(2 * 8 * 12 * 3, dtype=jnp.float32).reshape(2, 8, 12, 3)
    patches = to_patches(images, 4)
    assert patches.shape == (2, 2, 3, 48)
    np.testing.assert_array_equal(patches[0, 1, 2].reshape(4, 4, 3), images[0, 4:8, 8:12])
    np.testing.assert_array_equal(from_patches(patches, 4, 3), images)


def test_codebook_patches_round_trip_exactly(patch_vq):
    _, params, encode, decode = patch_vq
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 32, (2, 3, 5)).astype(np.int32)
    images = decode(jnp.asarray(ids))
    np.testing.assert_array_equal(encode(images), ids)
    assert images.shape == (2, 12, 20, 3)


def test_ids_are_local_a_changed_cell_changes_only_its_own_id(patch_vq):
    _, _, encode, decode = patch_vq
    rng = np.random.default_rng(2)
    images = np.asarray(decode(jnp.asarray(rng.integers(0, 32, (1, 4, 4)), jnp.int32)))
    edited = images.copy()
    edited[0, 4:8, 8:12] = rng.random((4, 4, 3))  # one cell
    before, after = np.asarray(encode(images)), np.asarray(encode(edited))
    differ = before != after
    assert not differ[:, np.arange(4) != 1].any() and not differ[:, :, np.arange(4) != 2].any()
    decoded_before, decoded_after = np.asarray(decode(before)), np.asarray(decode(after))
    outside = np.ones((16, 16), bool)
    outside[4:8, 8:12] = False
    np.testing.assert_array_equal(decoded_before[0][outside], decoded_after[0][outside])


def test_bad_inputs_are_named(patch_vq):
    model, params, _, _ = patch_vq
    with pytest.raises(ValueError, match="multiple of the VQ stride 4"):
        model.apply({"params": params}, jnp.zeros((1, 6, 8, 3)), method=model.encode_to_ids)
    with pytest.raises(ValueError, match="codes in"):
        model.apply({"params": params}, jnp.full((1, 2, 2), 40), method=model.decode_ids)
    with pytest.raises(ValueError, match="expected >= 1"):
        PatchVQConfig(patch_size=0)


def test_save_load_and_config_dispatch(tmp_path, patch_vq):
    model, params, encode, _ = patch_vq
    save_vq(str(tmp_path / "vq"), model, params)
    config = json.load(open(tmp_path / "vq" / "config.json"))
    assert config["_class_name"] == "PatchVQ"
    loaded, loaded_params = load_vq(str(tmp_path / "vq"))
    assert isinstance(loaded, PatchVQ) and loaded.config == model.config
    np.testing.assert_array_equal(loaded_params["codebook"], params["codebook"])
    assert isinstance(tokenizer_module(tokenizer_config(config)), PatchVQ)
    assert tokenizer_config({"_class_name": "VQModel"}).stride == 16
    with pytest.raises(ValueError, match="unknown tokenizer class"):
        tokenizer_config({"_class_name": "Magic"})
    wrong = dict(config, num_vq_embeddings=16)
    json.dump(wrong, open(tmp_path / "vq" / "config.json", "w"))
    with pytest.raises(ConversionError, match="expected exactly"):
        load_vq(str(tmp_path / "vq"))


def test_kmeans_recovers_separated_clusters_with_weights():
    rng = np.random.default_rng(3)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = np.concatenate([c + rng.normal(0, 0.1, (50, 2)) for c in centres]).astype(np.float32)
    fitted, info = fit_kmeans(points, np.ones(150, np.float32), 3, jax.random.key(0), steps=10)
    order = np.argsort(fitted[:, 0] * 100 + fitted[:, 1])
    np.testing.assert_allclose(fitted[order], centres[[0, 2, 1]], atol=0.1)
    assert info["mse"] < 0.05
    rows, counts = unique_rows(np.array([[1, 2], [1, 2], [3, 4]], np.uint8))
    np.testing.assert_array_equal(rows, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(counts, [2, 1])
    with pytest.raises(ValueError, match="distinct points"):
        fit_kmeans(points[:2], np.ones(2, np.float32), 3, jax.random.key(0), steps=1)


def test_paste_back_unchanged_keeps_source_pixels_where_ids_agree():
    source = np.zeros((8, 8, 3), np.uint8)
    decoded = np.full((8, 8, 3), 9, np.uint8)
    out = paste_back_unchanged(
        source, decoded, np.array([[1, 2], [3, 4]]), np.array([[1, 0], [3, 0]])
    )
    assert (out[:4, :4] == 0).all() and (out[4:, :4] == 0).all() and (out[:, 4:] == 9).all()


def test_fit_patch_vq_cli_writes_a_loadable_tokenizer(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "launch.fit_patch_vq", "--config",
         "configs/patch_vq_default.py:runlocal", "--workdir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["num_codes"] == 64 and report["heldout_codes_used"] > 8
    assert set(report["per_category"]) == {
        "add", "remove", "replace", "color", "background change", "motion change", "style"
    }  # fmt: skip
    assert report == json.load(open(tmp_path / "fit.json"))
    model, params = load_vq(str(tmp_path / "vq"))
    assert isinstance(model, PatchVQ) and params["codebook"].shape == (64, 48)


def test_vq_ceiling_with_paste_back_keeps_unchanged_cells():
    from data_pipelines.synthetic import make_example
    from editmgt_jax.evaluation import edit_eval

    examples = [make_example(7, i, size=32, split="heldout") for i in range(4)]
    # A tokenizer that ruins every cell it decodes, but whose ids are the images' own cells:
    # with paste-back every unchanged cell is the source again, so only edited cells are ruined.
    tokenize = lambda images: to_patches(jnp.asarray(images), 4).sum(-1)
    ruin = lambda images: np.zeros_like(images)
    plain = edit_eval.vq_ceiling(examples, ruin)
    pasted = edit_eval.vq_ceiling(examples, ruin, tokenize=lambda x: np.asarray(tokenize(x)))
    assert plain == pasted  # the edited cells are ruined either way: same verdicts ...
    out = paste_back_unchanged(
        examples[0].source, ruin(examples[0].source), *tokenize(
            np.stack([examples[0].source, examples[0].target])
        )
    )  # fmt: skip
    same = np.kron(
        np.asarray(tokenize(examples[0].source[None])[0] == tokenize(examples[0].target[None])[0]),
        np.ones((4, 4), bool),
    )
    np.testing.assert_array_equal(out[same], examples[0].source[same])  # ... but pixels kept
    assert (out[~same] == 0).all()
