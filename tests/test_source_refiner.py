"""The PatchVQ's source-guided refiner (ours, issue 27): it decodes an edit's changed cells from
the codes and the source image, keeps every unchanged cell's source pixels exactly, is stored
with the VQ (folders and bundles), fits on pairs, and the Editor uses it."""

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
from editmgt_jax.models.patch_vq import PatchVQ, PatchVQConfig
from editmgt_jax.models.source_refiner import SourceRefiner
from editmgt_jax.models.tokenizer import decode_edit
from editmgt_jax.training.refiner_fit import RefinerData, fit_refiner, refiner_loss

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = os.path.join(REPO, "editmgt_jax", "assets", "default_model")


def _fit_cli(config: str, *flags: str) -> subprocess.CompletedProcess:
    """`launch.fit_source_refiner --config configs/source_refiner.py:CONFIG FLAGS...` from the repo."""
    return subprocess.run(
        [sys.executable, "-m", "launch.fit_source_refiner", "--config",
         f"configs/source_refiner.py:{config}", *flags],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip


def _refined_vq(width=4, depth=1):
    config = PatchVQConfig(
        patch_size=2, num_vq_embeddings=8, refiner_width=width, refiner_depth=depth
    )
    model = PatchVQ(config)
    params = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 3)))["params"]
    # Move the refiner's zero-initialised last layer so it does something.
    out = params["refiner"]["out"]
    params["refiner"]["out"] = dict(out, kernel=jnp.full_like(out["kernel"], 0.1))
    params["codebook"] = jax.random.uniform(jax.random.key(1), params["codebook"].shape)
    return model, params


def test_decode_edit_keeps_unchanged_cells_and_refines_the_changed_ones():
    model, params = _refined_vq()
    source = jax.random.uniform(jax.random.key(2), (1, 4, 4, 3))
    source_ids = jnp.array([[[0, 1], [2, 3]]])
    ids = source_ids.at[0, 0, 0].set(5)  # one cell changed
    out = np.asarray(decode_edit(model, params, ids, source, source_ids))
    np.testing.assert_array_equal(out[0, 2:], np.asarray(source)[0, 2:])
    np.testing.assert_array_equal(out[0, :2, 2:], np.asarray(source)[0, :2, 2:])
    codes = np.asarray(model.apply({"params": params}, ids, method=model.decode_ids))
    assert np.abs(out[0, :2, :2] - codes[0, :2, :2]).max() > 1e-3  # refined, not the code
    plain = PatchVQ(PatchVQConfig(patch_size=2, num_vq_embeddings=8))
    without = np.asarray(
        decode_edit(plain, {"codebook": params["codebook"]}, ids, source, source_ids)
    )
    np.testing.assert_array_equal(without[0, :2, :2], codes[0, :2, :2])
    np.testing.assert_array_equal(without[0, 2:], np.asarray(source)[0, 2:])


def test_a_refiner_is_saved_and_loaded_with_its_vq(tmp_path):
    model, params = _refined_vq()
    save_vq(str(tmp_path / "vq"), model, params)
    loaded, loaded_params = load_vq(str(tmp_path / "vq"))
    assert loaded.config == model.config
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded_params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # A folder whose config asks for a refiner its tensors do not hold is refused by name.
    plain = PatchVQ(PatchVQConfig(patch_size=2, num_vq_embeddings=8))
    save_vq(str(tmp_path / "plain"), plain, {"codebook": params["codebook"]})
    config = json.load(open(tmp_path / "plain" / "config.json"))
    json.dump(
        dict(config, refiner_width=4, refiner_depth=1),
        open(tmp_path / "plain" / "config.json", "w"),
    )
    with pytest.raises(ConversionError, match="refiner"):
        load_vq(str(tmp_path / "plain"))


def test_fitting_learns_to_keep_the_source_where_the_target_kept_it():
    # Targets keep the source on the left half of every changed cell and paint the right half a
    # flat colour; the decoded codes are the target plus noise. The fitted refiner takes the
    # source's exact pixels back where they were kept, so its L1 falls well below the codes'.
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
    target = source.copy()
    target[:, :, 4:] = (200, 30, 60)
    noise = rng.normal(0, 12, source.shape)
    decoded = np.clip(target + noise, 0, 255).astype(np.uint8)
    changed = np.ones((64, 8, 8), bool)
    data = RefinerData(decoded, source, target, changed)
    model = SourceRefiner(width=8, depth=1)
    params, losses = fit_refiner(model, data, jax.random.key(0), steps=300, batch_size=16)
    f = lambda x: jnp.asarray(x, jnp.float32) / 255.0
    out = np.asarray(model.apply(params, f(decoded), f(source), changed)) * 255.0
    kept_before = np.abs(decoded[:, :, :4].astype(float) - target[:, :, :4]).mean()
    kept_after = np.abs(out[:, :, :4] - target[:, :, :4]).mean()
    assert kept_after < 0.5 * kept_before, (kept_after, kept_before)
    assert float(refiner_loss(params, model, f(decoded), f(source), f(target), changed)) < losses[0]


def test_fit_source_refiner_cli_writes_a_bundle_the_editor_refines_with(tmp_path):
    from data_pipelines.synthetic import make_example
    from editmgt_jax.editor import Editor

    out = tmp_path / "refined"
    run = _fit_cli("runlocal", f"--config.vq={DEFAULT}", "--out", str(out))
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(report["clean_ceiling_after"]) >= {"overall", "replace", "background change"}
    editor = Editor.from_bundle(str(out))
    assert editor.refines and editor.metadata["refiner_fit"] == report
    assert editor.vq_config.refiner_width == 4 and editor.vq_config.refiner_depth == 1
    example = make_example(2702701, 0, size=64, split="heldout")
    result = editor.edit([example.source], [example.instruction], paste_back=False)[0]
    same = np.kron(result.tokens == result.source_tokens, np.ones((4, 4), bool))
    np.testing.assert_array_equal(result.image[same], example.source[same])
    with pytest.raises(subprocess.CalledProcessError):  # an existing --out is refused
        _fit_cli("runlocal", f"--config.vq={DEFAULT}", "--out", str(out))
    # The fitted refiner copied onto another bundle with the same codebook: no fit, same weights.
    copied = tmp_path / "copied"
    _fit_cli(
        "runlocal", f"--config.vq={DEFAULT}", f"--config.refiner_from={out}", "--out", str(copied)
    )
    a, b = load_vq(str(out))[1], load_vq(str(copied))[1]
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_model_pairs_are_the_bundles_own_edits_decoded():
    import dataclasses

    from data_pipelines.synthetic import make_example
    from editmgt_jax.editor import Editor
    from launch.fit_source_refiner import _model_pairs

    editor = Editor.from_bundle(DEFAULT)
    vq, params = load_vq(DEFAULT)
    plain = PatchVQ(dataclasses.replace(vq.config, refiner_width=0))
    codebook = {"codebook": params["codebook"]}
    examples = [make_example(5130001, i, size=64, split="train") for i in range(2)]
    data = _model_pairs(editor, plain, codebook, examples, batch_size=2)
    results = editor.edit([e.source for e in examples], [e.instruction for e in examples])
    tokens = np.stack([r.tokens for r in results])
    changed = np.kron(tokens != np.stack([r.source_tokens for r in results]), np.ones((1, 4, 4)))
    np.testing.assert_array_equal(data.changed, changed.astype(bool))
    assert data.changed.any()  # the model edits something
    # A cell decodes to its token's codebook patch (uint8), not to the target's.
    patches = np.asarray(params["codebook"]).reshape(-1, 4, 4, 3)
    cell = np.argwhere(tokens[0] != editor.tokenize(examples[0].target[None])[0])
    if len(cell):
        y, x = cell[0]
        patch = np.round(patches[tokens[0, y, x]] * 255)
        np.testing.assert_allclose(
            data.decoded[0, 4 * y : 4 * y + 4, 4 * x : 4 * x + 4], patch, atol=1
        )
    np.testing.assert_array_equal(data.target, np.stack([e.target for e in examples]))


def test_model_pairs_need_a_bundle_and_pairs_must_be_known(tmp_path):
    from configs.source_refiner import get_config
    from launch.fit_source_refiner import fit

    model, params = _refined_vq()
    save_vq(str(tmp_path / "vq"), model, params)
    config = get_config("model,runlocal")
    config.vq = str(tmp_path / "vq")
    with pytest.raises(ValueError, match="needs a bundle"):
        fit(config, str(tmp_path / "out"))
    config.pairs = "both"
    with pytest.raises(ValueError, match="'target' or 'model'"):
        fit(config, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="takes no argument"):
        get_config("fast")


def test_fit_source_refiner_on_model_pairs_reports_the_bundles_clean_edits(tmp_path):
    out = tmp_path / "self_refined"
    run = _fit_cli("model,runlocal", f"--config.vq={DEFAULT}", "--out", str(out))
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["pairs"] == "model" and report["pairs_seed"] == 5130001
    for key in ("clean_edits_before", "clean_edits_after", "clean_ceiling_after"):
        assert 0.0 <= report[key]["overall"] <= 1.0, key
    assert load_vq(str(out))[0].config.refiner_width == 4
