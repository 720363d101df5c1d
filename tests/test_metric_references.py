"""The benchmark metrics' SSIM window and the resize filters of the benchmark preprocessing and
the editor, against references written from their definitions (not from the code under test):
a Gaussian window built here, and a hand-written antialiased bicubic (tests/resize_reference.py)
on images with structure, where a wrong sigma or filter shows."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from editmgt_jax.editing import images as imio
from editmgt_jax.evaluation import benchmark_metrics as bm
from editmgt_jax.evaluation import benchmark_preprocess as bp
from tests.resize_reference import bicubic_resize, structured

# The SSIM of Wang et al. (2004) as torchmetrics computes it: an 11-tap Gaussian window of
# sigma 1.5 (normalised), K1 = 0.01, K2 = 0.03, data range 1.
SSIM_TAPS, SSIM_SIGMA = 11, 1.5


def _ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Per channel: local means, variances (clamped at 0) and covariance under the 2-D window,
    the image mirrored at its edges (numpy's "reflect", ndimage's "mirror"), the border of half a
    window dropped, the mean over pixels and channels."""
    offsets = np.arange(SSIM_TAPS) - SSIM_TAPS // 2
    g = np.exp(-(offsets**2) / (2 * SSIM_SIGMA**2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    border = SSIM_TAPS // 2
    values = []
    for ch in range(a.shape[-1]):
        x, y = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)
        f = lambda z: ndimage.correlate(z, window, mode="mirror")
        mx, my = f(x), f(y)
        vx, vy = np.maximum(f(x * x) - mx**2, 0), np.maximum(f(y * y) - my**2, 0)
        cov = f(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        values.append(s[border:-border, border:-border])
    return float(np.mean(values))


def test_ssim_uses_the_11_tap_sigma_1_5_gaussian_window():
    rng = np.random.default_rng(7)
    noise = rng.random((40, 36, 3))
    smooth = ndimage.uniform_filter(noise, (5, 5, 1))
    picture = structured(40, 36) / 255.0
    for a, b in ((noise, smooth), (picture, np.clip(picture + 0.1 * noise, 0, 1))):
        assert bm.ssim(a, b) == pytest.approx(_ssim_reference(a, b), abs=1e-9)


def test_the_clip_and_dino_resizes_are_antialiased_bicubic():
    image = structured(300, 400)
    for size in (224, 100):  # the shorter side down to 224; and further, where antialias shows
        (h, w) = bp.shorter_side_size(300, 400, size)
        np.testing.assert_allclose(
            bp.resize_shorter(image, size), bicubic_resize(image, (h, w)), atol=2
        )
    # CLIP: 300 x 400 -> 224 x 298 -> the central 224 (left offset round(74 / 2) = 37).
    expected = bicubic_resize(image, (224, 298))[:, 37 : 37 + 224] / 255.0
    expected = (expected - np.array(bp.CLIP_MEAN)) / np.array(bp.CLIP_STD)
    tolerance = 2 / 255 / min(bp.CLIP_STD) + 1e-6
    np.testing.assert_allclose(bp.clip_pixels([image], 224)[0], expected, atol=tolerance)
    # DINO: 300 x 400 -> 256 x 341 -> the central 224 (offsets round(16 / 2), round(117 / 2)).
    expected = bicubic_resize(image, (256, 341))[16 : 16 + 224, 58 : 58 + 224] / 255.0
    expected = (expected - np.array(bp.IMAGENET_MEAN)) / np.array(bp.IMAGENET_STD)
    tolerance = 2 / 255 / min(bp.IMAGENET_STD) + 1e-6
    np.testing.assert_allclose(bp.dino_pixels([image])[0], expected, atol=tolerance)


def test_the_editors_resize_is_antialiased_bicubic():
    image = structured(40, 30)
    for size in ((64, 48), (16, 12), (24, 40)):  # up, down, mixed
        np.testing.assert_allclose(imio.resize(image, size), bicubic_resize(image, size), atol=2)
