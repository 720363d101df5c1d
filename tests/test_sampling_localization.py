"""Localization: attention consolidation, rescaling, smoothing and resizing of score maps.

Parity is against the fixtures made with the official PyTorch/scipy code (official_tiny/io.npz).
scipy is used only as an extra oracle on grids the fixtures do not cover (a transcription of the
official `smooth_local_scores`, checked first against the fixtures).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from editmgt_jax.sampling import localization as loc
from tests.fixtures_path import fixtures_dir

TOL = 1e-4


@pytest.fixture(scope="module")
def io():
    return dict(np.load(fixtures_dir("official_tiny", "io.npz")))


def _official_smooth(scores_2d: np.ndarray, method: str = "adaptive") -> np.ndarray:
    """The official numpy/scipy smoothing (src/local_utils.py) for one 2-D map, as an oracle."""
    original = scores_2d.astype(np.float32)
    if method == "adaptive":
        blurred = ndimage.gaussian_filter(original, sigma=1.5, mode="reflect")
        var = ndimage.generic_filter(original, np.var, size=5)
        var = (var - var.min()) / (var.max() - var.min() + 1e-8)
        weight = 1.0 - var * 0.7
        smoothed = weight * blurred + (1 - weight) * original
    else:
        smoothed = ndimage.gaussian_filter(original, sigma=2.0, mode="reflect")
    peaks = original > np.percentile(original, 90)
    smoothed[peaks] = 0.7 * original[peaks] + 0.3 * smoothed[peaks]
    if smoothed.max() > smoothed.min():
        smoothed = (smoothed - smoothed.min()) / (smoothed.max() - smoothed.min())
        smoothed = smoothed * (original.max() - original.min()) + original.min()
    return smoothed


def test_consolidation_matches_fixture_capture(io):
    # The fixture's raw scores are the mean over heads and all 256 text tokens of block 3, cond
    # half.
    attention = io["attn_text_to_image_block3"][1:2]
    raw = loc.consolidate_attention([jnp.asarray(attention)])
    np.testing.assert_allclose(raw, io["local_scores_raw"], atol=1e-7, rtol=0)
    assert int(io["local_scores_blocks"][0]) == 3


def test_consolidation_means_blocks_and_weights_query_tokens(io):
    a = jnp.asarray(io["attn_text_to_image_block3"])  # [2, 4, 256, 64]
    b = jnp.asarray(io["attn_text_to_image_block1_s1"])
    both = loc.consolidate_attention([a, b])
    expected = (np.mean(np.asarray(a), axis=(1, 2)) + np.mean(np.asarray(b), axis=(1, 2))) / 2
    np.testing.assert_allclose(both, expected, atol=1e-7)

    weights = loc.query_weights([[3, 4, 5], []], 256)
    query = loc.consolidate_attention(a, jnp.asarray(weights))
    np.testing.assert_allclose(query[0], np.asarray(a)[0, :, 3:6].mean(axis=(0, 1)), atol=1e-7)
    # No query token found: the plain mean over all text tokens.
    np.testing.assert_allclose(query[1], np.asarray(a)[1].mean(axis=(0, 1)), atol=1e-7)


def test_consolidation_errors():
    with pytest.raises(ValueError, match="one shape"):
        loc.consolidate_attention([jnp.ones((1, 2, 3, 4)), jnp.ones((1, 2, 3, 5))])
    with pytest.raises(ValueError, match="text_weights"):
        loc.consolidate_attention(jnp.ones((1, 2, 3, 4)), jnp.ones((1, 2)))
    with pytest.raises(ValueError, match="outside"):
        loc.query_weights([[7]], 4)


def test_rescale_smooth_chain_matches_fixture(io):
    rescaled = loc.rescale_scores(jnp.asarray(io["local_scores_raw"]))
    np.testing.assert_allclose(rescaled, io["local_scores_rescaled"], atol=TOL, rtol=0)
    smoothed = loc.smooth_scores(jnp.asarray(io["local_scores_rescaled"]))  # 8 x 8 grid
    np.testing.assert_allclose(smoothed, io["local_scores_smoothed"], atol=TOL, rtol=0)
    chained = loc.region_scores(jnp.asarray(io["local_scores_raw"]), (8, 8), (8, 8))
    np.testing.assert_allclose(chained, io["local_scores_smoothed"], atol=TOL, rtol=0)


def test_smooth_and_upsample_32_match_fixture(io):
    smoothed = jax.jit(loc.smooth_scores)(jnp.asarray(io["smooth_fixture_in"]))
    np.testing.assert_allclose(smoothed, io["smooth_fixture_out"], atol=TOL, rtol=0)
    up = jax.jit(loc.resize_scores, static_argnums=1)(
        jnp.asarray(io["smooth_fixture_out"]), (64, 64)
    )
    np.testing.assert_allclose(up, io["upsample_fixture_out"], atol=TOL, rtol=0)
    # The official upsampling does not clamp: bicubic overshoot survives.
    assert float(up.min()) < 0.0 and float(up.max()) > 1.0


def test_oracle_agrees_with_fixtures(io):
    for key_in, key_out, side in [
        ("smooth_fixture_in", "smooth_fixture_out", 32),
        ("local_scores_rescaled", "local_scores_smoothed", 8),
    ]:
        oracle = _official_smooth(io[key_in].reshape(side, side)).reshape(1, -1)
        np.testing.assert_allclose(oracle, io[key_out], atol=1e-6)


@pytest.mark.parametrize("grid", [(1, 1), (3, 3), (5, 5), (11, 11), (16, 16), (64, 64), (6, 10)])
@pytest.mark.parametrize("method", ["adaptive", "gaussian"])
def test_smoothing_on_other_grids_matches_scipy(grid, method):
    rng = np.random.default_rng(grid[0] * 100 + grid[1])
    h, w = grid
    x = rng.random((3, h * w)).astype(np.float32)
    x[1] = np.round(x[1] * 4) / 4  # ties at the percentile
    x[2] = rng.random(h * w) ** 4  # a few peaks
    out = loc.smooth_scores(jnp.asarray(x), method=method, grid=None if h == w else grid)
    oracle = np.stack([_official_smooth(row.reshape(h, w), method).ravel() for row in x])
    np.testing.assert_allclose(out, oracle, atol=TOL, rtol=0)


def test_smoothing_is_per_sample_and_handles_constant_maps(io):
    x = np.stack([io["smooth_fixture_in"][0], np.full(1024, 0.25, np.float32)])
    out = np.asarray(loc.smooth_scores(jnp.asarray(x)))
    np.testing.assert_allclose(out[:1], io["smooth_fixture_out"], atol=TOL, rtol=0)
    np.testing.assert_allclose(out[1], 0.25, atol=1e-7)
    none = loc.smooth_scores(jnp.asarray(x), method="none", preserve_peaks=False)
    np.testing.assert_allclose(none, x, atol=1e-6)


def test_resize_properties():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((2, 36)).astype(np.float32))
    np.testing.assert_array_equal(loc.resize_scores(x, (6, 6)), x)
    const = loc.resize_scores(jnp.full((1, 16), 0.4), (7, 9))
    np.testing.assert_allclose(const, 0.4, atol=1e-6)
    # 2x upsampling of a ramp, one row worked by hand with torch's kernel (A = -0.75): output row 3
    # samples source row 1.25, taps rows 0..3 with weights -0.10546875, 0.87890625, 0.26171875,
    # -0.03515625.
    ramp = jnp.asarray(np.add.outer(np.arange(4.0), np.zeros(4)).ravel()[None], jnp.float32)
    up = np.asarray(loc.resize_scores(ramp, (8, 8))).reshape(8, 8)
    np.testing.assert_allclose(up[3, :], 0.87890625 + 2 * 0.26171875 - 3 * 0.03515625, atol=1e-6)
    assert loc.resize_scores(x, (3, 4), grid=(6, 6)).shape == (2, 12)


def test_grid_errors():
    with pytest.raises(ValueError, match="not a square grid"):
        loc.smooth_scores(jnp.ones((1, 10)))
    with pytest.raises(ValueError, match="has 12 cells"):
        loc.resize_scores(jnp.ones((1, 10)), (4, 4), grid=(3, 4))
    with pytest.raises(ValueError, match="Unknown smoothing method"):
        loc.smooth_scores(jnp.ones((1, 4)), method="bilateral")


def test_max_rescale_keeps_a_spread_out_map_above_lambda():
    """A map spread over the whole image (a style, a new background) stays above lambda under
    "max" (nothing held); "minmax" always puts its least attended cell at 0 (held)."""
    key = jax.random.PRNGKey(0)
    spread = 0.8 + 0.2 * jax.random.uniform(key, (2, 64))
    peaked = jnp.zeros((2, 64)).at[:, 9].set(1.0) + 1e-3
    spread_max = loc.region_scores(spread, (8, 8), (16, 16), "adaptive", "max")
    spread_minmax = loc.region_scores(spread, (8, 8), (16, 16), "adaptive", "minmax")
    assert float(spread_max.min()) > 0.7
    assert float((spread_minmax < 0.1).mean()) > 0.0
    peaked_max = loc.region_scores(peaked, (8, 8), (16, 16), "adaptive", "max")
    assert 0.5 < float((peaked_max < 0.1).mean()) < 1.0
    with pytest.raises(ValueError, match="score rescaling"):
        loc.rescale_scores(spread, "median")
