"""Edit-quality metrics against a ground-truth edit mask (numpy, one example at a time).

Images are uint8 or float [H, W, 3] on the same 0-255 scale; `mask` is bool [H, W] (True = the
edit may change this pixel). Token maps are [h, w] on the VQ token grid, each cell covering
H / h x W / w pixels.

Example:
    >>> import math

import numpy as np
    >>> source = np.zeros((8, 8, 3)); target = source.copy(); target[:4] = 200
    >>> mask = np.zeros((8, 8), bool); mask[:4] = True
    >>> edited = source.copy(); edited[:4] = 150
    >>> round(edit_progress(source, target, edited, mask), 2)
    0.75
    >>> psnr_outside(source, edited, mask)
    100.0
"""

from __future__ import annotations

import math

import numpy as np

PSNR_CAP_DB = 100.0  # identical pixels: a finite value keeps means meaningful


def _float(image: np.ndarray) -> np.ndarray:
    return np.asarray(image, np.float64)


def edit_progress(
    source: np.ndarray, target: np.ndarray, edited: np.ndarray, mask: np.ndarray
) -> float:
    """How far the edit moved the masked pixels from the source toward the target, by L1.

    1 - L1(edited, target) / L1(source, target) inside `mask`: 0 = unchanged, 1 = the target
    exactly; negative when it moved away. NaN when source and target agree inside the mask.
    """
    inside = np.asarray(mask, bool)
    before = np.abs(_float(source) - _float(target))[inside].mean()
    after = np.abs(_float(edited) - _float(target))[inside].mean()
    return float("nan") if before == 0 else float(1.0 - after / before)


def edit_success(
    source: np.ndarray, target: np.ndarray, edited: np.ndarray, mask: np.ndarray
) -> bool:
    """The edit region moved at least halfway from the source toward the target (by L1)."""
    return bool(edit_progress(source, target, edited, mask) >= 0.5)


CLEAN_PROGRESS = 0.75  # the edit region ends at least three quarters of the way to the target
CLEAN_PSNR_DB = 30.0  # ... and the rest of the image is kept at least this well


def edit_clean(
    source: np.ndarray, target: np.ndarray, edited: np.ndarray, mask: np.ndarray
) -> bool:
    """A clean edit: `edit_progress` >= 0.75 and PSNR outside the mask >= 30 dB (an edit with no
    pixels outside, a whole-image style change, is judged inside only)."""
    if not edit_progress(source, target, edited, mask) >= CLEAN_PROGRESS:
        return False
    psnr = psnr_outside(source, edited, mask)
    return bool(math.isnan(psnr) or psnr >= CLEAN_PSNR_DB)


def outside_mse(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean squared error over the pixels outside `mask` (NaN when there are none)."""
    outside = ~np.asarray(mask, bool)
    if not outside.any():
        return float("nan")
    return float(np.square(_float(a) - _float(b))[outside].mean())


def psnr_from_mse(mse: float, max_value: float = 255.0) -> float:
    """PSNR in dB, capped at PSNR_CAP_DB; NaN stays NaN."""
    if np.isnan(mse):
        return float("nan")
    if mse <= 0:
        return PSNR_CAP_DB
    return float(min(PSNR_CAP_DB, 10.0 * np.log10(max_value**2 / mse)))


def psnr_outside(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB, 0-255 scale) of `b` against `a` over the pixels outside `mask`."""
    return psnr_from_mse(outside_mse(a, b, mask))


def _gaussian_blur(image: np.ndarray, sigma: float = 1.5, radius: int = 5) -> np.ndarray:
    """Separable gaussian blur of [H, W, C] with reflected borders."""
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
    rows = sum(k * padded[i : i + image.shape[0]] for i, k in enumerate(kernel))
    return sum(k * rows[:, i : i + image.shape[1]] for i, k in enumerate(kernel))


def ssim_map(a: np.ndarray, b: np.ndarray, max_value: float = 255.0) -> np.ndarray:
    """Per-pixel SSIM [H, W] (gaussian window, sigma 1.5; mean over channels)."""
    a, b = _float(a), _float(b)
    c1, c2 = (0.01 * max_value) ** 2, (0.03 * max_value) ** 2
    mu_a, mu_b = _gaussian_blur(a), _gaussian_blur(b)
    var_a = _gaussian_blur(a * a) - mu_a**2
    var_b = _gaussian_blur(b * b) - mu_b**2
    cov = _gaussian_blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return (num / den).mean(axis=-1)


def ssim_outside(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean SSIM over the pixels outside `mask` (NaN when there are none)."""
    outside = ~np.asarray(mask, bool)
    if not outside.any():
        return float("nan")
    return float(ssim_map(a, b)[outside].mean())


def cell_coverage(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Fraction of each token cell covered by `mask` (bool [H, W]) -> float [h, w].

    H and W must be multiples of the grid (the synthetic images are).
    """
    height, width = mask.shape
    h, w = grid
    if height % h or width % w:
        raise ValueError(f"mask {mask.shape} does not divide into a {grid} token grid")
    cells = np.asarray(mask, np.float64).reshape(h, height // h, w, width // w)
    return cells.mean(axis=(1, 3))


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for bool `labels` (ties count half); NaN if one class."""
    scores = np.asarray(scores, np.float64).ravel()
    labels = np.asarray(labels, bool).ravel()
    positives, negatives = scores[labels], scores[~labels]
    if not len(positives) or not len(negatives):
        return float("nan")
    # Mann-Whitney U with average ranks: exact for ties.
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    start = 0
    while start < len(scores):
        stop = start
        while stop + 1 < len(scores) and sorted_scores[stop + 1] == sorted_scores[start]:
            stop += 1
        ranks[order[start : stop + 1]] = 0.5 * (start + stop) + 1.0
        start = stop + 1
    u = ranks[labels].sum() - len(positives) * (len(positives) + 1) / 2
    return float(u / (len(positives) * len(negatives)))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool maps (1 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def target_tokens_reproduced(
    source_tokens: np.ndarray, target_tokens: np.ndarray, tokens: np.ndarray
) -> tuple[float, float]:
    """(changed, unchanged): the shares of the target's tokens that differ from / equal the
    source's which the edit reproduced exactly (NaN where there are none, or the grids differ).

    The most direct measure of what the transformer learned: an edit that reaches the target
    tokens reaches the VQ ceiling, whatever the pixel metrics say."""
    source_tokens, target_tokens = np.asarray(source_tokens), np.asarray(target_tokens)
    tokens = np.asarray(tokens)
    if not source_tokens.shape == target_tokens.shape == tokens.shape:
        return float("nan"), float("nan")
    changed = source_tokens != target_tokens
    hit = tokens == target_tokens
    share = lambda where: float(hit[where].mean()) if where.any() else float("nan")
    return share(changed), share(~changed)


def changed_outside(source_tokens: np.ndarray, tokens: np.ndarray, coverage: np.ndarray) -> float:
    """Share of the token cells wholly outside the edit region whose token changed (NaN if none)."""
    outside = np.asarray(coverage) == 0
    if not outside.any():
        return float("nan")
    return float((np.asarray(source_tokens) != np.asarray(tokens))[outside].mean())
