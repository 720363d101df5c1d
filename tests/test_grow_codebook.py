"""Extending a PatchVQ codebook (`launch.fit_patch_vq` with `extend_from`) and growing a bundle's
transformer onto it (`launch.grow_codebook`): the old codes keep their ids, the added ones start
from their nearest old code, and the grown model edits as before."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from editmgt_jax.checkpoint.convert.vq import load_vq
from editmgt_jax.training.kmeans import extended_codebook
from editmgt_jax.training.token_init import grown_token_tables

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = os.path.join(REPO, "editmgt_jax", "assets", "default_model")


def test_extended_codebook_keeps_the_base_and_fits_what_it_codes_worst():
    rng = np.random.default_rng(0)
    base = np.array([[0.0, 0.0], [1.0, 1.0]], np.float32)
    near = rng.normal(0, 0.01, (50, 2)) + base[rng.integers(0, 2, 50)]
    far = rng.normal(0, 0.01, (50, 2)) + np.array([0.0, 1.0])  # a cluster no base code covers
    points = np.concatenate([near, far]).astype(np.float32)
    codebook, info = extended_codebook(
        base, points, np.ones(100, np.float32), 3, 0.5, jax.random.key(0), 10
    )
    np.testing.assert_array_equal(codebook[:2], base)
    np.testing.assert_allclose(codebook[2], [0.0, 1.0], atol=0.01)
    assert info["mse"] < 1e-3 and info["extended_points"] == 50
    with pytest.raises(ValueError, match="must exceed"):
        extended_codebook(base, points, np.ones(100, np.float32), 2, 0.5, jax.random.key(0), 1)


def test_grown_tables_copy_the_nearest_old_code_and_move_the_mask_row():
    old = np.array([[0.0], [1.0], [2.0]], np.float32)
    new = np.array([[0.0], [1.0], [2.0], [1.9], [0.2]], np.float32)
    embedding = np.arange(4 * 2, dtype=np.float32).reshape(4, 2)  # 3 codes + mask
    kernel = np.arange(2 * 3, dtype=np.float32).reshape(2, 3)
    params = {"embed": {"embeddings": {"embedding": embedding}},
              "mlm_layer": {"conv2": {"kernel": kernel}}, "other": {"w": np.ones(3)}}  # fmt: skip
    grown = grown_token_tables(params, old, new)
    table = np.asarray(grown["embed"]["embeddings"]["embedding"])
    np.testing.assert_array_equal(table, embedding[[0, 1, 2, 2, 0, 3]])
    readout = np.asarray(grown["mlm_layer"]["conv2"]["kernel"])
    np.testing.assert_array_equal(readout, kernel[:, [0, 1, 2, 2, 0]])
    np.testing.assert_array_equal(grown["other"]["w"], params["other"]["w"])
    with pytest.raises(ValueError, match="must start with"):
        grown_token_tables(params, old, new[::-1])


def test_fit_extends_a_tokenizer_and_the_grown_default_model_edits_as_before(tmp_path):
    # The shipped model grown onto its codebook + 8 noise patches no image cell is near: every id
    # stays, and the most likely code ties an added code with its old one, which wins. One
    # decoding step reveals every token at once (over several, a tie halves the kept code's
    # probability, so the reveal order may differ).
    from data_pipelines.synthetic import make_example
    from editmgt_jax.checkpoint.convert.vq import save_vq
    from editmgt_jax.editor import Editor
    from editmgt_jax.models.patch_vq import PatchVQ

    model, params = load_vq(DEFAULT)
    old = np.asarray(params["codebook"])
    noise = np.random.default_rng(1).random((8, old.shape[1])).astype(np.float32)
    config = dataclasses.replace(model.config, num_vq_embeddings=old.shape[0] + 8)
    extended = dict(params, codebook=np.concatenate([old, noise]))  # its refiner kept
    save_vq(str(tmp_path / "vq"), PatchVQ(config), extended)
    out = subprocess.run(
        [sys.executable, "-m", "launch.grow_codebook", "--bundle", DEFAULT,
         "--vq", str(tmp_path / "vq"), "--out", str(tmp_path / "grown")],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["codes_before"] == 1024 and summary["codes_after"] == 1032
    examples = [make_example(2702701, i, size=64, split="heldout") for i in range(3)]
    sources = [e.source for e in examples]
    texts = [e.instruction for e in examples]
    before = Editor.from_bundle(DEFAULT).edit(sources, texts, batch_size=3, steps=1)
    grown = Editor.from_bundle(str(tmp_path / "grown"))
    assert grown.config.codebook_size == 1032 and grown.config.mask_token_id == 1032
    after = grown.edit(sources, texts, batch_size=3, steps=1)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a.tokens, b.tokens)
        np.testing.assert_array_equal(a.image, b.image)
    with pytest.raises(subprocess.CalledProcessError):  # an existing --out is refused
        subprocess.run(
            [sys.executable, "-m", "launch.grow_codebook", "--bundle", DEFAULT,
             "--vq", str(tmp_path / "vq"), "--out", str(tmp_path / "grown")],
            cwd=REPO, capture_output=True, text=True, timeout=600, check=True,
        )  # fmt: skip


def test_fit_patch_vq_extends_a_fitted_codebook(tmp_path):
    def fit(workdir, *overrides):
        out = subprocess.run(
            [sys.executable, "-m", "launch.fit_patch_vq", "--config",
             "configs/patch_vq_default.py:runlocal", "--workdir", str(workdir), *overrides],
            cwd=REPO, capture_output=True, text=True, timeout=600, check=True,
        )  # fmt: skip
        return json.loads(out.stdout.strip().splitlines()[-1])

    base = fit(tmp_path / "a")
    grown = fit(
        tmp_path / "b", f"--config.extend_from={tmp_path / 'a' / 'vq'}", "--config.num_codes=96"
    )
    assert grown["num_codes"] == 96 and grown["extended_from"] == str(tmp_path / "a" / "vq")
    assert grown["train_mse"] < base["train_mse"]
    assert (
        "vq_ceiling_clean" in grown and grown["vq_ceiling_clean"] >= base["vq_ceiling_clean"] - 0.1
    )
    a = np.asarray(load_vq(str(tmp_path / "a" / "vq"))[1]["codebook"])
    b = np.asarray(load_vq(str(tmp_path / "b" / "vq"))[1]["codebook"])
    np.testing.assert_array_equal(b[:64], a)
