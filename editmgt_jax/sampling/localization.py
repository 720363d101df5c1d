"""Where should the edit happen: text-to-image attention turned into a per-token score map.

The chain the sampler uses for region-hold (official: src/local_utils.py, src/scheduler.py):

    attention [B, heads, T, n] per block --consolidate_attention--> raw [B, n]
        --rescale_scores--> [0, 1] per sample --smooth_scores--> (score grid)
        --resize_scores--> [B, H * W] on the token grid

Everything is batched per sample, jit-able and runs on any grid; the official code handles one
sample on a 32 x 32 or 64 x 64 map only. Filters are written as small dense matrices built at trace
time (the grid is static), applied with fp32 matmuls, which is exact enough for the 1e-4 parity and
cheap at these sizes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

SMOOTHING_METHODS = ("adaptive", "gaussian", "none")

# Official constants (src/local_utils.py, smooth_local_scores and rescale_scores).
_RESCALE_EPS = 1e-8
_ADAPTIVE_SIGMA = 1.5  # x strength
_GAUSSIAN_SIGMA = 2.0  # x strength
_GAUSSIAN_TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default
_VARIANCE_WINDOW = 5  # ndimage.generic_filter(np.var, size=5)
_VARIANCE_BLEND = 0.7  # weight = 1 - 0.7 * normalised local variance
_PEAK_PERCENTILE = 90.0
_PEAK_KEEP = 0.7  # share of the original value kept above the percentile
_BICUBIC_A = -0.75  # torch's bicubic kernel

_HIGHEST = jax.lax.Precision.HIGHEST


def square_grid(n: int) -> tuple[int, int]:
    """(s, s) with s * s == n; raises if `n` is not a perfect square.

    Example:
        >>> square_grid(1024)
        (32, 32)
    """
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"A score map of {n} values is not a square grid; pass its grid (h, w)")
    return side, side


def _grid_of(n: int, grid: tuple[int, int] | None) -> tuple[int, int]:
    if grid is None:
        return square_grid(n)
    h, w = (int(g) for g in grid)
    if h * w != n:
        raise ValueError(f"Grid {grid!r} has {h * w} cells but the scores have {n} values")
    return h, w


def consolidate_attention(
    attention: jax.Array | Sequence[jax.Array], text_weights: jax.Array | None = None
) -> jax.Array:
    """Mean text-to-image attention: over blocks, heads and text tokens (or a weighted set of them).

    Args:
        attention: one array [B, heads, T, n] or a sequence of them (one per captured block).
        text_weights: optional float [B, T] or bool [B, T], e.g. 1 on the tokens of a query phrase;
            each sample's weights are normalised to sum 1. A sample whose weights are all zero
            (phrase not found) falls back to the plain mean over all text tokens.

    Returns:
        float32 [B, n].

    Example:
        >>> a = jnp.ones((1, 2, 3, 4)).at[:, :, 0, 0].set(4.0)
        >>> consolidate_attention([a, a]).tolist()
        [[2.0, 1.0, 1.0, 1.0]]
        >>> consolidate_attention(a, jnp.array([[1.0, 0.0, 0.0]])).tolist()
        [[4.0, 1.0, 1.0, 1.0]]
    """
    blocks = [attention] if isinstance(attention, jax.Array | np.ndarray) else list(attention)
    if not blocks:
        raise ValueError("consolidate_attention needs at least one block's attention")
    shape = blocks[0].shape
    for block in blocks:
        if block.ndim != 4 or block.shape != shape:
            raise ValueError(
                f"Attention maps must all be [B, heads, T, n] of one shape; "
                f"got {block.shape} and {shape}"
            )
    # Mean over heads first: it is linear, so the order of the means does not matter.
    per_text = jnp.mean(
        jnp.stack([jnp.mean(b.astype(jnp.float32), axis=1) for b in blocks]), axis=0
    )
    return text_mean(per_text, text_weights)


def text_mean(per_text: jax.Array, text_weights: jax.Array | None = None) -> jax.Array:
    """Mean of per-text-token maps [B, T, n] over T, or weighted (see `consolidate_attention`).

    Example:
        >>> text_mean(jnp.arange(6.0).reshape(1, 3, 2)).tolist()
        [[2.0, 3.0]]
        >>> text_mean(jnp.arange(6.0).reshape(1, 3, 2), jnp.array([[0.0, 1.0, 1.0]])).tolist()
        [[3.0, 4.0]]
    """
    per_text = jnp.asarray(per_text, jnp.float32)
    if per_text.ndim != 3:
        raise ValueError(f"Per-text maps must be [B, T, n], got shape {per_text.shape}")
    uniform = jnp.mean(per_text, axis=1)
    if text_weights is None:
        return uniform
    weights = jnp.asarray(text_weights, jnp.float32)
    if weights.shape != per_text.shape[:2]:
        raise ValueError(
            f"text_weights has shape {weights.shape}; expected [B, T] = {per_text.shape[:2]}"
        )
    total = jnp.sum(weights, axis=1, keepdims=True)
    weighted = jnp.einsum("bt,btn->bn", weights, per_text, precision=_HIGHEST)
    weighted = weighted / jnp.where(total > 0, total, 1.0)
    # A query phrase that was not found: the official code would average nothing (NaN).
    return jnp.where(total > 0, weighted, uniform)


def query_weights(positions: Sequence[Sequence[int]], text_len: int) -> np.ndarray:
    """Host helper: float32 [B, T] with 1 at each sample's query-phrase token positions.

    Example:
        >>> query_weights([[1, 2], []], 4).tolist()
        [[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    """
    weights = np.zeros((len(positions), text_len), np.float32)
    for b, pos in enumerate(positions):
        for p in pos:
            if not 0 <= p < text_len:
                raise ValueError(f"Query position {p} of sample {b} is outside [0, {text_len})")
            weights[b, p] = 1.0
    return weights


RESCALE_METHODS = ("minmax", "max")


def rescale_scores(scores: jax.Array, method: str = "minmax") -> jax.Array:
    """Per-sample rescaling to [0, 1], float32 [B, N].

    "minmax" (official): (s - min) / (max - min + 1e-8): the least attended position is 0, so
    some positions always fall below any lambda > 0, even when the attention is spread over the
    whole image (a style or a new background). "max": s / (max + 1e-8) keeps a spread-out map
    near 1 everywhere (nothing held) and a peaked one near 0 away from its peak.

    Example:
        >>> rescale_scores(jnp.array([[1.0, 2.0, 3.0]])).round(4).tolist()
        [[0.0, 0.5, 1.0]]
        >>> rescale_scores(jnp.array([[2.0, 3.0, 4.0]]), "max").round(4).tolist()
        [[0.5, 0.75, 1.0]]
    """
    scores = jnp.asarray(scores, jnp.float32)
    hi = jnp.max(scores, axis=-1, keepdims=True)
    if method == "max":
        return scores / (hi + _RESCALE_EPS)
    if method != "minmax":
        raise ValueError(f"Unknown score rescaling {method!r}; expected one of {RESCALE_METHODS}")
    lo = jnp.min(scores, axis=-1, keepdims=True)
    return (scores - lo) / (hi - lo + _RESCALE_EPS)


def _reflect_index(index: np.ndarray, n: int) -> np.ndarray:
    """scipy.ndimage mode 'reflect' (d c b a | a b c d | d c b a), any offset, by its period 2n."""
    m = np.mod(index, 2 * n)
    return np.where(m < n, m, 2 * n - 1 - m)


def _gaussian_matrix(n: int, sigma: float) -> np.ndarray:
    """[n, n] float64 M with M @ x == scipy.ndimage.gaussian_filter1d(x, sigma, mode='reflect')."""
    radius = int(_GAUSSIAN_TRUNCATE * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 / sigma**2 * offsets.astype(np.float64) ** 2)
    kernel /= kernel.sum()
    matrix = np.zeros((n, n), np.float64)
    rows = np.arange(n)[:, None]
    cols = _reflect_index(rows + offsets[None, :], n)
    np.add.at(
        matrix, (np.broadcast_to(rows, cols.shape), cols), np.broadcast_to(kernel, cols.shape)
    )
    return matrix


def _separable(maps: jax.Array, rows: np.ndarray, cols: np.ndarray) -> jax.Array:
    """rows @ map @ cols.T for each map of [B, h, w]."""
    out = jnp.einsum("ij,bjk->bik", jnp.asarray(rows, jnp.float32), maps, precision=_HIGHEST)
    return jnp.einsum("bik,lk->bil", out, jnp.asarray(cols, jnp.float32), precision=_HIGHEST)


def _gaussian_2d(maps: jax.Array, sigma: float) -> jax.Array:
    _, h, w = maps.shape
    return _separable(maps, _gaussian_matrix(h, sigma), _gaussian_matrix(w, sigma))


def _box_matrix(n: int, size: int) -> np.ndarray:
    """[n, n] float64 M with M @ x == scipy.ndimage.uniform_filter1d(x, size, mode='reflect')."""
    offsets = np.arange(size) - size // 2
    rows = np.arange(n)[:, None]
    cols = _reflect_index(rows + offsets[None, :], n)
    matrix = np.zeros((n, n), np.float64)
    np.add.at(matrix, (np.broadcast_to(rows, cols.shape), cols), 1.0 / size)
    return matrix


def _local_variance(maps: jax.Array, size: int) -> jax.Array:
    """Population variance over a size x size window (reflect borders), [B, h, w].

    E[x^2] - E[x]^2 with box filters as matrices; the maps are centred first, which keeps the
    cancellation error near fp32 resolution for score maps in [0, 1].
    """
    _, h, w = maps.shape
    rows, cols = _box_matrix(h, size), _box_matrix(w, size)
    centred = maps - jnp.mean(maps, axis=(1, 2), keepdims=True)
    mean = _separable(centred, rows, cols)
    return jnp.maximum(_separable(jnp.square(centred), rows, cols) - jnp.square(mean), 0.0)


def _percentile(flat: jax.Array, q: float) -> jax.Array:
    """numpy's default ('linear') percentile of each row of [B, N], float32 [B, 1]."""
    n = flat.shape[-1]
    virtual = (n - 1) * (q / 100.0)  # float64 on the host, as numpy computes the index
    below = math.floor(virtual)
    above = min(below + 1, n - 1)
    gamma = np.float32(virtual - below)
    ordered = jnp.sort(flat, axis=-1)
    a, b = ordered[:, below : below + 1], ordered[:, above : above + 1]
    # numpy's _lerp: interpolate from the nearer end.
    return a + (b - a) * gamma if gamma < 0.5 else b - (b - a) * (1 - gamma)


def _minmax(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return jnp.min(x, axis=-1, keepdims=True), jnp.max(x, axis=-1, keepdims=True)


def smooth_scores(
    scores: jax.Array,
    method: str = "adaptive",
    strength: float = 1.0,
    preserve_peaks: bool = True,
    grid: tuple[int, int] | None = None,
) -> jax.Array:
    """The official `smooth_local_scores`, batched, on any grid: float32 [B, N] -> [B, N].

    'adaptive' blends a gaussian blur (sigma 1.5 strength) with the input, blurring less where the
    5 x 5 local variance (min-max normalised) is high: w = 1 - 0.7 var, out = w blur + (1 - w) in.
    'gaussian' is a plain blur (sigma 2 strength); 'none' skips the filter. With `preserve_peaks`,
    values above the per-sample 90th percentile keep 0.7 of the input. The result is min-max mapped
    back onto the input's range (unless it is constant). Borders reflect (scipy 'reflect', gaussian
    truncated at 4 sigma).

    Args:
        scores: [B, N], one map per sample, row-major on `grid`.
        method: "adaptive" (the official sampler's choice), "gaussian" or "none".
        strength: scales sigma.
        preserve_peaks: the official default, True.
        grid: (h, w) with h * w == N; default square.

    Example:
        >>> x = jnp.zeros((1, 16)).at[0, 5].set(1.0)
        >>> y = smooth_scores(x)
        >>> y.shape, float(y.min()), float(y.max())
        ((1, 16), 0.0, 1.0)
    """
    if method not in SMOOTHING_METHODS:
        raise ValueError(
            f"Unknown smoothing method {method!r}; expected one of {SMOOTHING_METHODS}"
        )
    if not strength > 0:
        raise ValueError(f"Smoothing strength must be > 0, got {strength!r}")
    scores = jnp.asarray(scores, jnp.float32)
    if scores.ndim != 2:
        raise ValueError(f"scores must be [B, N], got shape {scores.shape}")
    h, w = _grid_of(scores.shape[1], grid)
    return _smooth(scores, method, float(strength), bool(preserve_peaks), (h, w))


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _smooth(
    scores: jax.Array, method: str, strength: float, preserve_peaks: bool, grid: tuple[int, int]
) -> jax.Array:
    batch, n = scores.shape
    h, w = grid
    maps = scores.reshape(batch, h, w)

    if method == "adaptive":
        blurred = _gaussian_2d(maps, _ADAPTIVE_SIGMA * strength).reshape(batch, n)
        var = _local_variance(maps, _VARIANCE_WINDOW).reshape(batch, n)
        v_lo, v_hi = _minmax(var)
        var = (var - v_lo) / (v_hi - v_lo + _RESCALE_EPS)
        weight = 1.0 - var * _VARIANCE_BLEND
        smoothed = weight * blurred + (1 - weight) * scores
    elif method == "gaussian":
        smoothed = _gaussian_2d(maps, _GAUSSIAN_SIGMA * strength).reshape(batch, n)
    else:
        smoothed = scores

    if preserve_peaks:
        peaks = scores > _percentile(scores, _PEAK_PERCENTILE)
        smoothed = jnp.where(peaks, _PEAK_KEEP * scores + (1 - _PEAK_KEEP) * smoothed, smoothed)

    s_lo, s_hi = _minmax(smoothed)
    o_lo, o_hi = _minmax(scores)
    span = jnp.where(s_hi > s_lo, s_hi - s_lo, 1.0)
    remapped = (smoothed - s_lo) / span * (o_hi - o_lo) + o_lo
    return jnp.where(s_hi > s_lo, remapped, smoothed)


def _cubic_weight(x: np.ndarray) -> np.ndarray:
    """torch's cubic convolution kernel (A = -0.75) at distance |x| <= 2, float64."""
    x = np.abs(x)
    a = _BICUBIC_A
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, far)


def _bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] float64 M: 1-D torch bicubic resize, align_corners=False, edge-clamped taps."""
    scale = n_in / n_out
    src = (np.arange(n_out) + 0.5) * scale - 0.5  # not clamped at 0 for cubic, as torch
    base = np.floor(src)
    t = src - base
    matrix = np.zeros((n_out, n_in), np.float64)
    for tap in range(-1, 3):
        idx = np.clip(base.astype(np.int64) + tap, 0, n_in - 1)
        np.add.at(matrix, (np.arange(n_out), idx), _cubic_weight(t - tap))
    return matrix


def resize_scores(
    scores: jax.Array, size: tuple[int, int], grid: tuple[int, int] | None = None
) -> jax.Array:
    """Bicubic resize of per-sample maps, as torch `F.interpolate(mode='bicubic')`.

    align_corners=False, kernel A = -0.75, taps clamped at the edges.

    No antialiasing and no clamping (the official `upsample_score_map` does not clamp, so values may
    overshoot the input range slightly).

    Args:
        scores: float [B, n] row-major on `grid` (default square).
        size: (h, w) of the output grid.
        grid: (h_in, w_in) of the input; default square.

    Returns:
        float32 [B, h * w].

    Example:
        >>> resize_scores(jnp.ones((2, 4)), (4, 4)).round(6).tolist()[0] == [1.0] * 16
        True
    """
    scores = jnp.asarray(scores, jnp.float32)
    if scores.ndim != 2:
        raise ValueError(f"scores must be [B, n], got shape {scores.shape}")
    h_in, w_in = _grid_of(scores.shape[1], grid)
    h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise ValueError(f"Output size must be positive, got {size!r}")
    if (h, w) == (h_in, w_in):
        return scores
    return _resize(scores, (h_in, w_in), (h, w))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _resize(scores: jax.Array, grid: tuple[int, int], size: tuple[int, int]) -> jax.Array:
    maps = scores.reshape(scores.shape[0], *grid)
    out = _separable(maps, _bicubic_matrix(grid[0], size[0]), _bicubic_matrix(grid[1], size[1]))
    return out.reshape(scores.shape[0], size[0] * size[1])


def region_scores(
    raw: jax.Array,
    score_grid: tuple[int, int],
    token_grid: tuple[int, int],
    method: str = "adaptive",
    rescale: str = "minmax",
) -> jax.Array:
    """What region-hold compares with lambda: rescale, smooth (score grid), resize (token grid).

    Args:
        raw: float [B, n] consolidated attention, n = prod(score_grid).
        score_grid: (h, w) of the transformer's own grid.
        token_grid: (H, W) of the tokens.
        method: smoothing method (see `smooth_scores`).
        rescale: "minmax" (official) or "max" (see `rescale_scores`).

    Returns:
        float32 [B, H * W].

    Example:
        >>> region_scores(jnp.arange(16.0)[None], (4, 4), (8, 8)).shape
        (1, 64)
    """
    scores = smooth_scores(rescale_scores(raw, rescale), method=method, grid=score_grid)
    return resize_scores(scores, token_grid, grid=score_grid)
