"""Benchmark metrics and preprocessing against independent numpy / scipy / sklearn computations
and hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import signal, spatial
from sklearn.metrics import pairwise, roc_auc_score

from editmgt_jax.evaluation import benchmark_metrics as bm
from editmgt_jax.evaluation import benchmark_preprocess as bp
from tests.benchmark_layouts import rle


def _images(seed, shape=(40, 36, 3)):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, shape, dtype=np.uint8), rng.integers(0, 256, shape, dtype=np.uint8)


def test_l1_l2_resize_the_edit_to_the_reference_and_average_every_channel():
    edit, _ = _images(0, (20, 26, 3))
    _, target = _images(1, (40, 36, 3))
    resized = np.asarray(Image.fromarray(edit).resize((36, 40), Image.Resampling.BICUBIC), float)
    diff = resized / 255.0 - target / 255.0
    assert bm.l1_distance(edit, target) == pytest.approx(np.abs(diff).sum() / diff.size, abs=1e-12)
    assert bm.l2_distance(edit, target) == pytest.approx((diff**2).sum() / diff.size, abs=1e-12)
    assert bm.l1_distance(target, target) == 0.0


def test_embedding_similarities():
    rng = np.random.default_rng(0)
    a, b, c, d = rng.normal(size=(4, 16))
    assert bm.cosine_similarity(a, b) == pytest.approx(1 - spatial.distance.cosine(a, b))
    direction = bm.clip_direction_similarity(a, b, c, d)
    unit = lambda v: v / np.linalg.norm(v)  # InstructPix2Pix normalises each feature first
    expected = 1 - spatial.distance.cosine(unit(b) - unit(a), unit(d) - unit(c))
    assert direction == pytest.approx(expected)
    assert bm.clip_score(a, a) == pytest.approx(100.0)
    assert bm.clip_score(a, -a) == 0.0  # negative cosines clip at 0 (torchmetrics)


def test_pie_mask_decodes_as_its_evaluator_decodes_it():
    h = w = 512
    runs = [
        10 * w + 5,
        20,  # inside row 10
        300 * w + 500,
        40,  # wraps from row 300 into row 301
        h * w - 30,
        100,  # clipped at the end of the array
    ]
    expected = np.zeros((h, w))
    for c in range(5, 25):
        expected[10, c] = 1
    for i in range(40):
        expected[(300 * w + 500 + i) // w, (300 * w + 500 + i) % w] = 1
    for i in range(30):
        expected[(h * w - 30 + i) // w, (h * w - 30 + i) % w] = 1
    expected[0, :] = expected[-1, :] = expected[:, 0] = expected[:, -1] = (
        1  # the evaluator's border
    )
    np.testing.assert_array_equal(bm.decode_pie_mask(runs), expected)
    # The tests' own encoder (for the miniature layout) round-trips through the decoder.
    mask = np.zeros((h, w), bool)
    mask[100:200, 50:300] = True
    border = bm.decode_pie_mask([]) > 0
    np.testing.assert_array_equal(bm.decode_pie_mask(rle(mask)) > 0, mask | border)
    with pytest.raises(ValueError, match="pairs"):
        bm.decode_pie_mask([1, 2, 3])


def test_pie_psnr_mse_count_the_zeroed_edit_region():
    src, edit = _images(2)
    keep = np.ones(src.shape[:2])
    keep[5:20, 8:30] = 0  # the edit region, zeroed in both images
    a = src.astype(np.float32) / 255 * keep[..., None]
    b = edit.astype(np.float32) / 255 * keep[..., None]
    mse = float(((a.astype(np.float64) - b) ** 2).sum() / a.size)  # zeros in the denominator
    assert bm.pie_mse(src, edit, keep) == pytest.approx(mse, rel=1e-9)
    assert bm.pie_psnr(src, edit, keep) == pytest.approx(10 * np.log10(1 / mse), rel=1e-9)
    assert bm.pie_psnr(src, src, keep) == float("inf")  # torchmetrics' log(0): no cap


def _ssim_direct(a, b):
    """torchmetrics' SSIM by 2-D correlation per channel (scipy), reflect pad 5, border dropped."""
    g = bm.gaussian_kernel_1d()
    kernel = np.outer(g, g)
    pad = len(g) // 2
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for ch in range(a.shape[-1]):
        x = np.pad(a[..., ch], pad, mode="reflect")
        y = np.pad(b[..., ch], pad, mode="reflect")
        f = lambda z: signal.correlate2d(z, kernel, mode="valid")
        mx, my = f(x), f(y)
        vx, vy = np.maximum(f(x * x) - mx**2, 0), np.maximum(f(y * y) - my**2, 0)
        cov = f(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        values.append(s[pad:-pad, pad:-pad])
    return float(np.mean(values))


def test_ssim_matches_a_direct_2d_correlation():
    src, edit = _images(3)
    keep = np.ones(src.shape[:2])
    keep[10:25, 3:17] = 0
    expected = _ssim_direct(bm.pie_masked(edit, keep).astype(np.float64), bm.pie_masked(src, keep))
    assert bm.pie_ssim(src, edit, keep) == pytest.approx(expected, abs=1e-9)
    assert bm.ssim(src / 255.0, src / 255.0) == pytest.approx(1.0)
    assert len(bm.gaussian_kernel_1d()) == 11


def test_structure_distance_is_the_mse_of_key_self_similarities():
    rng = np.random.default_rng(4)
    k1, k2 = rng.normal(size=(2, 17, 12))
    sim1, sim2 = pairwise.cosine_similarity(k1), pairwise.cosine_similarity(k2)
    np.testing.assert_allclose(bm.keys_self_similarity(k1), sim1, atol=1e-12)
    assert bm.structure_distance(k1, k2) == pytest.approx(np.mean((sim1 - sim2) ** 2), abs=1e-12)
    assert bm.structure_distance(k1, k1) == 0.0


def test_attention_localization_against_the_mask():
    mask = np.zeros((64, 48), bool)
    mask[16:48, 12:36] = True  # token cells (8 x 6 grid of 8 px): rows 2-5, cols 1-4 (partly)
    region = bm.mask_coverage(mask, (8, 6)) >= 0.5
    manual = np.zeros((8, 6))
    for r in range(8):
        for c in range(6):
            manual[r, c] = mask[r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8].mean()
    np.testing.assert_allclose(bm.mask_coverage(mask, (8, 6)), manual, atol=1e-6)
    rng = np.random.default_rng(5)
    heat = np.clip(region + rng.normal(0, 0.4, region.shape), 0, 1)
    auroc, iou = bm.attention_localization(heat, mask, 0.5)
    assert auroc == pytest.approx(roc_auc_score(region.ravel(), heat.ravel()))
    predicted = heat >= 0.5
    assert iou == pytest.approx((predicted & region).sum() / (predicted | region).sum())
    assert bm.attention_localization(region.astype(float), mask, 0.5) == (1.0, 1.0)


def test_changed_outside_counts_pixels_beyond_the_tolerance():
    src = np.full((10, 10, 3), 100, np.uint8)
    edit = src.copy()
    mask = np.zeros((10, 10), bool)
    mask[:5] = True
    edit[:5] = 0  # inside: never counted
    edit[6, :4, 1] = 109  # 4 pixels moved 9 levels in one channel
    edit[7, :3] = 104  # 3 pixels moved 4 levels
    assert bm.changed_outside(src, edit, mask, tolerance=8) == pytest.approx(4 / 50)
    assert bm.changed_outside(src, edit, mask, tolerance=0) == pytest.approx(7 / 50)
    assert np.isnan(bm.changed_outside(src, edit, np.ones((10, 10), bool), 8))


def test_resize_and_crop_follow_torchvision_and_transformers():
    assert bp.shorter_side_size(480, 640, 224) == (224, 298)  # int(224 * 640 / 480)
    assert bp.shorter_side_size(640, 480, 224) == (298, 224)
    # 224 x 896 exceeds max_size 480: the long side becomes 480, the short int(480 * 224 / 896).
    assert bp.shorter_side_size(512, 2048, 224, max_size=480) == (120, 480)
    image = np.arange(231 * 231 * 3, dtype=np.int64).reshape(231, 231, 3)
    # (231 - 224) / 2 = 3.5: torchvision rounds (to 4), transformers floors (to 3).
    assert bp.center_crop(image, 224, "round")[0, 0, 0] == image[4, 4, 0]
    assert bp.center_crop(image, 224, "floor")[0, 0, 0] == image[3, 3, 0]
    grey = np.full((300, 400, 3), 128, np.uint8)
    pixels = bp.clip_pixels([grey], 224)
    assert pixels.shape == (1, 224, 224, 3)
    expected = (128 / 255 - np.array(bp.CLIP_MEAN)) / np.array(bp.CLIP_STD)
    np.testing.assert_allclose(pixels[0, 100, 100], expected, atol=1e-6)
    assert bp.dino_pixels([grey]).shape == (1, 224, 224, 3)


def test_structure_pixels_keep_the_0_255_scale():
    image = np.full((512, 512, 3), 200.0, np.float32)
    pixels = bp.structure_pixels(image)
    assert pixels.shape == (224, 224, 3)
    # PIE-Bench normalises the 0-255 values with ImageNet's [0, 1] statistics.
    expected = (200.0 - np.array(bp.IMAGENET_MEAN)) / np.array(bp.IMAGENET_STD)
    np.testing.assert_allclose(pixels[50, 50], expected, rtol=1e-5)
