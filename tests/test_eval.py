"""Edit-evaluation metrics (against brute-force references) and launch.eval on a random bundle."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from editmgt_jax.evaluation import edit_eval, metrics


def test_auroc_matches_pair_counting_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 60).astype(float)  # many ties
    labels = rng.random(60) < 0.4
    pairs = [
        1.0 if p > n else 0.5 if p == n else 0.0
        for p, n in itertools.product(scores[labels], scores[~labels])
    ]
    assert metrics.auroc(scores, labels) == pytest.approx(np.mean(pairs))
    assert metrics.auroc(labels.astype(float), labels) == 1.0
    assert np.isnan(metrics.auroc(scores, np.ones(60, bool)))


def test_edit_progress_and_success():
    source = np.zeros((4, 4, 3))
    target = np.full((4, 4, 3), 100.0)
    mask = np.zeros((4, 4), bool)
    mask[:2] = True
    edited = source.copy()
    edited[:2] = 40.0
    edited[2:] = 255.0  # outside the mask: does not count
    assert metrics.edit_progress(source, target, edited, mask) == pytest.approx(0.4)
    assert not metrics.edit_success(source, target, edited, mask)
    edited[:2] = 60.0
    assert metrics.edit_success(source, target, edited, mask)
    assert not metrics.edit_clean(source, target, edited, mask)  # 0.6 of the way: lenient only
    edited[:2] = 80.0
    assert not metrics.edit_clean(source, target, edited, mask)  # inside is right, outside off
    edited[2:] = 2.0  # PSNR outside 42 dB
    assert metrics.edit_clean(source, target, edited, mask)
    edited[:2] = 70.0
    assert not metrics.edit_clean(source, target, edited, mask)
    # A whole-image edit (nothing outside) is judged inside only.
    whole = np.ones((4, 4), bool)
    assert metrics.edit_clean(source, target, np.full((4, 4, 3), 80.0), whole)


def test_outside_metrics_ignore_the_masked_pixels():
    rng = np.random.default_rng(1)
    source = rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)
    mask = np.zeros((16, 16), bool)
    mask[4:8, 4:8] = True
    edited = source.copy()
    edited[mask] = 255 - edited[mask]
    assert metrics.psnr_outside(source, edited, mask) == metrics.PSNR_CAP_DB
    assert metrics.ssim_outside(source, edited, mask) < 1.0  # the window sees across the edge
    assert metrics.ssim_map(source, source).min() == pytest.approx(1.0)
    edited[0, 0, 0] = source[0, 0, 0] ^ 1  # one value off by one
    mse = 1.0 / (3 * (256 - 16))
    assert metrics.psnr_outside(source, edited, mask) == pytest.approx(10 * np.log10(255**2 / mse))
    assert np.isnan(metrics.psnr_outside(source, edited, np.ones((16, 16), bool)))


def test_cell_coverage_iou_and_changed_outside():
    mask = np.zeros((8, 8), bool)
    mask[:4, :2] = True
    coverage = metrics.cell_coverage(mask, (2, 2))
    np.testing.assert_allclose(coverage, [[0.5, 0.0], [0.0, 0.0]])
    assert metrics.iou(coverage > 0, coverage >= 0.5) == 1.0
    source = np.arange(4).reshape(2, 2)
    tokens = source.copy()
    tokens[1, 1] = 9
    assert metrics.changed_outside(source, tokens, coverage) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="token grid"):
        metrics.cell_coverage(mask, (3, 3))


def test_summary_means_skip_nan_and_count_them():
    rows = [
        dict(category="style", success=1.0, psnr_outside=float("nan"), mse_outside=float("nan")),
        dict(category="add", success=0.0, psnr_outside=40.0, mse_outside=1.0),
        dict(category="add", success=1.0, psnr_outside=20.0, mse_outside=3.0),
    ]
    summary = edit_eval.summarize(rows)
    assert summary["overall"]["success"] == pytest.approx(2 / 3)
    assert summary["overall"]["psnr_outside"] == pytest.approx(30.0)
    assert summary["overall"]["psnr_outside_count"] == 2
    assert summary["overall"]["psnr_outside_pooled"] == pytest.approx(10 * np.log10(255**2 / 2.0))
    assert summary["per_category"]["style"]["count"] == 1


def test_vq_ceiling_counts_round_trips_that_would_succeed():
    from data_pipelines.synthetic import make_example

    examples = [make_example(7, i, size=32, split="heldout") for i in range(5)]
    exact = edit_eval.vq_ceiling(examples, lambda targets: targets, batch_size=2)
    assert exact == [1.0] * 5  # a lossless tokenizer: the target itself
    by_source = {e.target.tobytes(): e.source for e in examples}
    unchanged = edit_eval.vq_ceiling(
        examples, lambda targets: np.stack([by_source[t.tobytes()] for t in targets])
    )
    assert unchanged == [0.0] * 5  # a tokenizer that loses the edit entirely


def test_launch_eval_on_a_random_bundle(smoke_bundle, tmp_path):
    out = tmp_path / "eval"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    cmd = [
        sys.executable, "-m", "launch.eval", "--checkpoint", str(smoke_bundle), "--out", str(out),
        "--num", "7", "--batch_size", "7", "--size", "32", "--lpips=false", "--steps", "2", "--record_into_bundle",
        "--guidance", "2.5",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    result = json.loads((out / "eval.json").read_text())
    assert result["random_init"] is True
    assert result["settings"]["guidance"] == 2.5
    assert result["overall"]["count"] == 7
    assert set(result["per_category"]) == {
        "add", "remove", "replace", "color", "background change", "motion change", "style",
    }  # fmt: skip
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == 7
    assert all(r["vq_ceiling"] in (0.0, 1.0) for r in records)
    assert all(r["clean"] <= r["success"] for r in records)  # clean is the stricter test
    assert all(r["vq_ceiling_clean"] <= r["vq_ceiling_paste_back"] for r in records)
    assert "clean" in result["overall"] and "vq_ceiling_clean" in result["per_category"]["add"]
    for key in ("target_tokens_changed", "target_tokens_unchanged"):
        values = [r[key] for r in records if r[key] is not None and not np.isnan(r[key])]
        assert values and all(0.0 <= v <= 1.0 for v in values), key
        assert key in result["overall"]
    assert 0.0 <= result["overall"]["vq_ceiling"] <= 1.0
    # Region-hold on keeps at least as many outside tokens as off (held tokens equal the source):
    # per edit, and so over the split.
    compared = 0
    for r in records:
        hold, free = r["changed_outside_hold"], r["changed_outside_no_hold"]
        assert np.isnan(hold) == np.isnan(free), r  # the same cells are outside in both runs
        if not np.isnan(hold):
            assert 0.0 <= hold <= free <= 1.0, (hold, free)
            compared += 1
    assert compared > 0
    overall = result["overall"]
    assert overall["changed_outside_hold"] <= overall["changed_outside_no_hold"]
    assert (out / "figure.png").stat().st_size > 0
    manifest = json.loads((Path(smoke_bundle) / "bundle.json").read_text())
    assert manifest["metadata"]["evaluation"]["overall"] == result["overall"]


def test_record_into_bundle_is_refused_without_an_explicit_checkpoint(tmp_path):
    """Without --checkpoint the evaluated bundle is the shipped default model: not rewritten."""
    from editmgt_jax.assets import DEFAULT_MODEL

    manifest = Path(DEFAULT_MODEL) / "bundle.json"
    before = manifest.read_bytes()
    cmd = [sys.executable, "-m", "launch.eval", "--out", str(tmp_path / "eval")]
    run = subprocess.run(
        [*cmd, "--record_into_bundle"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0 and "--record_into_bundle" in run.stderr, run.stderr[-2000:]
    assert "--checkpoint" in run.stderr
    assert manifest.read_bytes() == before and not (tmp_path / "eval").exists()


def test_eval_split_train_remakes_the_training_examples():
    from data_pipelines.synthetic import make_example
    from launch.eval import make_examples

    train = make_examples(11, 3, 32, split="train")
    heldout = make_examples(11, 3, 32)
    for i, example in enumerate(train):
        written = make_example(11, i, size=32, split="train")  # what make_synthetic writes
        assert example.instruction == written.instruction
        np.testing.assert_array_equal(example.source, written.source)
        np.testing.assert_array_equal(example.target, written.target)
    assert any(
        t.instruction != h.instruction or not np.array_equal(t.source, h.source)
        for t, h in zip(train, heldout, strict=True)
    )


def test_target_tokens_reproduced_splits_changed_and_unchanged():
    source = np.array([[1, 2], [3, 4]])
    target = np.array([[1, 9], [3, 8]])  # two tokens change
    edited = np.array([[1, 9], [0, 4]])  # one change reproduced, one unchanged token lost
    assert metrics.target_tokens_reproduced(source, target, edited) == (0.5, 0.5)
    changed, unchanged = metrics.target_tokens_reproduced(source, source, source)
    assert np.isnan(changed) and unchanged == 1.0
    assert all(np.isnan(metrics.target_tokens_reproduced(source, target, edited[:1])))


def test_bundle_folder_defaults_to_the_embedded_model_and_names_a_missing_one(tmp_path):
    """launch.eval's and launch.benchmark's `--checkpoint` (launch.cli.bundle_folder)."""
    from absl import app

    from editmgt_jax.assets import DEFAULT_MODEL
    from launch import cli

    assert cli.bundle_folder(None) == DEFAULT_MODEL
    assert cli.bundle_folder(str(tmp_path)) == str(tmp_path)
    with pytest.raises(app.UsageError, match="nowhere.*does not exist"):
        cli.bundle_folder(str(tmp_path / "nowhere"))
