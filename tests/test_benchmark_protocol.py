"""Each suite's default metrics follow the published protocol (issue 26, item 4): every check
compares with an independent re-implementation of the official definition, written from the
official code's text (torchmetrics' PSNR, PIL's JPEG save in PnPInversion's run scripts, torch
1.12's bilinear interpolate, InstructPix2Pix's ClipSimilarity, MagicBrush's test layout), not
with our own functions."""

from __future__ import annotations

import io
import json
import math
import os

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from editmgt_jax.evaluation import benchmark_metrics as bm
from editmgt_jax.evaluation import benchmark_preprocess as bp
from editmgt_jax.evaluation.benchmarks import emu_edit, gedit, harness, magicbrush, pie_bench
from editmgt_jax.evaluation.benchmarks.records import Example
from editmgt_jax.evaluation.benchmarks.scoring import Scorer
from tests import benchmark_layouts as layouts


def _photo(size=64, seed=0):
    """A uint8 image with structure (gradients, stripes, noise): JPEG cannot keep it exactly."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx * 4, yy * 3, (xx + yy) * 2], axis=-1) % 256
    stripes = ((xx // 3) % 2 * 60)[..., None]
    noise = rng.integers(0, 40, (size, size, 3))
    return np.clip(base + stripes + noise, 0, 255).astype(np.uint8)


def _torchmetrics_psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """torchmetrics' PeakSignalNoiseRatio(data_range=1.0), from its `_psnr_compute`:
    psnr_base_e = 2 log(data_range) - log(sum_squared_error / n_obs); psnr = psnr_base_e * 10 /
    log(10). float32 tensors, as matrics_calculator passes them."""
    diff = pred.astype(np.float32) - target.astype(np.float32)
    sse, n = np.float32(np.sum(diff * diff, dtype=np.float32)), diff.size
    with np.errstate(divide="ignore"):
        base_e = 2 * np.log(np.float32(1.0)) - np.log(sse / np.float32(n))
    return float(base_e * 10 / np.log(10.0))


def _masked(image: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """matrics_calculator: np.array(img).astype(np.float32) / 255 times the float32 mask."""
    return np.asarray(image).astype(np.float32) / 255 * keep.astype(np.float32)[..., None]


def _pil_jpeg(image: np.ndarray) -> np.ndarray:
    """PnPInversion's run scripts: `edited_image.save("<name>.jpg")` (PIL defaults), and its
    evaluator's `Image.open` of that file."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG")
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def _pie_example(source: np.ndarray) -> Example:
    mask = np.zeros(source.shape[:2], bool)
    mask[20:40, 16:44] = True
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = True  # the evaluator's border
    return Example(
        key="k",
        instruction="x",
        source=source,
        category="random",
        mask=mask,
        texts=dict(original_prompt="a", editing_prompt="b"),
    )


def test_psnr_of_an_exact_background_is_infinite_as_torchmetrics_gives():
    src = _photo()
    example = _pie_example(src)
    keep = ~example.mask
    edit = src.copy()
    edit[example.mask] = 0  # a paste-back edit: only the edit region changed
    official = _torchmetrics_psnr(_masked(edit, keep), _masked(src, keep))
    assert official == math.inf
    assert bm.pie_psnr(src, edit, keep) == official
    noisy = edit.copy()
    noisy[30, 5] += 3
    assert bm.pie_psnr(src, noisy, keep) == pytest.approx(
        _torchmetrics_psnr(_masked(noisy, keep), _masked(src, keep)), rel=1e-5
    )


def test_the_psnr_summary_reports_the_official_mean_and_the_exact_count_never_a_cap():
    rows = [
        dict(category="a", psnr_unedit_part=math.inf, exact_background=True),
        dict(category="a", psnr_unedit_part=30.0, exact_background=False),
        dict(category="b", psnr_unedit_part=None, exact_background=True),  # inf read back from JSON
        dict(category="b", psnr_unedit_part=41.0, exact_background=False),
        dict(category="b", psnr_unedit_part=math.nan),  # the mask covers the whole image
    ]
    # The evaluator writes one value per image; a mean over a column holding inf is inf, and
    # pandas' mean skips the NaN rows.
    values = np.array([math.inf, 30.0, math.inf, 41.0])
    assert np.mean(values) == math.inf
    out = harness.summarize(rows, pie_bench.METRICS, pie_bench.summarize_extra)
    assert out["psnr_unedit_part"] == "inf"
    assert out["exact_background_count"] == 2
    assert out["psnr_unedit_part_finite_mean"] == pytest.approx(35.5)
    assert out["psnr_unedit_part_finite_count"] == 2 and out["psnr_unedit_part_count"] == 4
    finite_only = harness.summarize(rows[1::2], pie_bench.METRICS, pie_bench.summarize_extra)
    assert finite_only["psnr_unedit_part"] == pytest.approx(35.5)
    assert finite_only["exact_background_count"] == 0
    assert json.loads(json.dumps(out)) == out  # strict JSON: no Infinity


def test_pie_bench_scores_a_kept_background_after_the_jpeg_round_trip():
    src = _photo(seed=1)
    example = _pie_example(src)
    keep = ~example.mask
    edit = src.copy()
    edit[example.mask] = (255, 0, 0)
    decoded = _pil_jpeg(edit)
    assert not np.array_equal(decoded[keep], src[keep])  # JPEG does not keep the background
    a, b = _masked(decoded, keep), _masked(src, keep)
    expected_mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    expected_psnr = _torchmetrics_psnr(a, b)
    assert 20 < expected_psnr < 60

    default = pie_bench.score([example], [src], [edit], Scorer(None, None, "none"))[0]
    assert default["psnr_unedit_part"] == pytest.approx(expected_psnr, rel=1e-5)
    assert default["mse_unedit_part"] == pytest.approx(expected_mse, rel=1e-6)
    assert default["exact_background"] is False
    np.testing.assert_array_equal(bm.jpeg_round_trip(edit), decoded)

    lossless = Scorer(None, None, "none", pie_jpeg_quality=None)
    row = pie_bench.score([example], [src], [edit], lossless)[0]
    assert row["psnr_unedit_part"] == math.inf and row["exact_background"] is True
    assert row["mse_unedit_part"] == 0.0 and row["ssim_unedit_part"] == pytest.approx(1.0)


def _torch_bilinear(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """torch 1.12 `upsample_bilinear2d(align_corners=False)` written out per output pixel, from
    `area_pixel_compute_scale` (in / out) and `area_pixel_compute_source_index` (scale *
    (dst + 0.5) - 0.5, negative clamped to 0), index1 = index0 + (index0 < in - 1)."""
    in_h, in_w = image.shape[:2]
    out = np.zeros((out_h, out_w, image.shape[2]), np.float64)
    for i in range(out_h):
        sy = max((in_h / out_h) * (i + 0.5) - 0.5, 0.0)
        y0 = int(sy)
        y1 = y0 + (1 if y0 < in_h - 1 else 0)
        ly = sy - y0
        for j in range(out_w):
            sx = max((in_w / out_w) * (j + 0.5) - 0.5, 0.0)
            x0 = int(sx)
            x1 = x0 + (1 if x0 < in_w - 1 else 0)
            lx = sx - x0
            out[i, j] = (1 - ly) * ((1 - lx) * image[y0, x0] + lx * image[y0, x1]) + ly * (
                (1 - lx) * image[y1, x0] + lx * image[y1, x1]
            )
    return out


def test_the_structure_resize_is_torchvision_0_13s_bilinear_without_antialias():
    image = _photo(64, seed=2)[:, :52].astype(np.float32)  # structure: stripes of 3 px
    for size in ((28, 23), (90, 70)):  # down- and upsampling
        expected = _torch_bilinear(image, *size)
        np.testing.assert_allclose(
            bp.resize_bilinear_no_antialias(image, size), expected, atol=2e-3
        )
        zoom = ndimage.zoom(
            image, (size[0] / 64, size[1] / 52, 1), order=1, mode="nearest", grid_mode=True
        )
        np.testing.assert_allclose(bp.resize_bilinear_no_antialias(image, size), zoom, atol=2e-3)
    # The structure-distance input: Resize(224, max_size=480) then ImageNet normalisation of 0-255.
    big = np.tile(_photo(64, seed=3), (6, 5, 1))[:300, :256].astype(np.float32)
    h, w = bp.shorter_side_size(300, 256, 224, 480)
    mean, std = np.array(bp.IMAGENET_MEAN), np.array(bp.IMAGENET_STD)
    expected = (_torch_bilinear(big, h, w) - mean) / std
    np.testing.assert_allclose(bp.structure_pixels(big), expected, rtol=1e-4, atol=1e-3)
    antialiased = bp.structure_pixels(big, antialias=True)
    assert (
        np.abs(antialiased - expected).mean()
        > 10 * np.abs(bp.structure_pixels(big) - expected).mean()
    )


def test_clip_dir_unit_normalises_the_features_as_instructpix2pix():
    rng = np.random.default_rng(6)
    image_0, image_1, text_0, text_1 = rng.normal(size=(4, 32)) * np.array([[1], [7], [0.2], [3]])

    def ip2p(i0, i1, t0, t1):
        """ClipSimilarity: features / norm(dim=1), then F.cosine_similarity of the changes."""
        i0, i1, t0, t1 = (v / np.sqrt(np.sum(v * v)) for v in (i0, i1, t0, t1))
        di, dt = i1 - i0, t1 - t0
        return float(np.sum(di * dt) / (np.sqrt(np.sum(di * di)) * np.sqrt(np.sum(dt * dt))))

    expected = ip2p(image_0, image_1, text_0, text_1)
    assert bm.clip_direction_similarity(image_0, image_1, text_0, text_1) == pytest.approx(expected)
    raw = image_1 - image_0, text_1 - text_0
    raw_cos = np.dot(*raw) / (np.linalg.norm(raw[0]) * np.linalg.norm(raw[1]))
    assert abs(raw_cos - expected) > 0.05  # the raw-difference definition would fail here


def test_magicbrush_reads_the_test_zip_layout(tmp_path):
    root = str(tmp_path / "MagicBrush")
    truth = layouts.magicbrush_sessions(root)
    for data in (root, os.path.join(root, "test")):  # the zip's parent folder or test/ itself
        reader = magicbrush.MagicBrushReader(data)
        assert reader.layout == "edit_sessions"
        assert reader.session_turns() == {"200": [1], "201": [1, 2], "202": [1]}
        examples = {e.key: e for e in reader}
        assert sorted(examples) == sorted(truth)
        assert reader.skipped == {"missing_image": 1}  # 202's target file is missing
        for key, (source, target, mask) in truth.items():
            e = examples[key]
            np.testing.assert_array_equal(e.source, source)
            np.testing.assert_array_equal(e.target, target)
            np.testing.assert_array_equal(e.mask, mask)  # 201_2: the RGBA transparency mask
            img_id, turn = key.split("_")
            assert e.meta == dict(img_id=img_id, turn_index=int(turn))
            assert e.texts["caption"] == f"a square of colour {turn} ({img_id})"
        assert reader.captions_path.endswith(os.path.join("test", "local_descriptions.json"))
    # The README example's caption name is found too; turns and sessions select as for parquet.
    other = str(tmp_path / "readme_name")
    layouts.magicbrush_sessions(other, captions="local_captions.json")
    reader = magicbrush.MagicBrushReader(other, sessions=["201"], turns=[2])
    assert [e.key for e in reader] == ["201_2"]
    assert reader.captions_path.endswith("local_captions.json")
    # The parquet layout is still read as before.
    parquet = str(tmp_path / "parquet")
    layouts.magicbrush(parquet)
    assert magicbrush.MagicBrushReader(parquet).layout == "parquet"


def test_every_suite_states_its_protocol():
    default, lossless = Scorer(None, None), Scorer(None, None, pie_jpeg_quality=None)
    pie = pie_bench.protocol(default)
    assert pie["jpeg_round_trip"] is True and pie["jpeg_quality"] == 75
    assert "no antialias" in pie["structure_resize"] and "inf" in pie["psnr"]
    assert pie["lpips"] == dict(
        pie["lpips"], backbone="alexnet", official="squeeze", comparable=False
    )
    assert pie_bench.protocol(lossless)["jpeg_round_trip"] is False
    assert any("--lossless" in d for d in pie_bench.protocol(lossless)["deviations"])
    assert emu_edit.protocol(default)["clip_dir_normalised"] is True
    assert "no evaluator" in emu_edit.protocol(default)["follows"]
    assert "image_eval.py" in magicbrush.protocol(default)["follows"]
    assert "_SRCIMG" in gedit.protocol(default)["layout"]
    for module in (pie_bench, emu_edit, magicbrush, gedit):
        json.dumps(module.protocol(default))
