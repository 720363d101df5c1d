"""Weighted k-means (Lloyd's algorithm) in JAX: fits the codebook of a `PatchVQ`.

Points are deduplicated first (`unique_rows`): images of a synthetic world repeat patches a lot
(flat colours), so the fit runs over distinct patches weighted by their counts.

Example:
    >>> import numpy as np, jax
    >>> points = np.array([[0.0], [0.1], [1.0], [1.1]], np.float32)
    >>> centres, info = fit_kmeans(points, np.ones(4, np.float32), 2, jax.random.key(0), steps=5)
    >>> sorted(round(float(c), 2) for c in centres[:, 0])
    [0.05, 1.05]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from editmgt_jax.common_types import Array, PRNGKey
from editmgt_jax.models.vq import nearest_code

# Points per distance block: [chunk, codes] float32 stays small.
CHUNK = 16384


def unique_rows(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct rows [M, D], count of each [M] float32) of an integer array [N, D]."""
    rows, counts = np.unique(np.ascontiguousarray(points), axis=0, return_counts=True)
    return rows, counts.astype(np.float32)


def _assign(points: Array, centres: Array) -> tuple[Array, Array]:
    """Nearest centre [N] int32 and squared distance [N] float32, in blocks of CHUNK points."""
    ids = []
    for start in range(0, points.shape[0], CHUNK):
        ids.append(nearest_code(points[start : start + CHUNK], centres))
    ids = jnp.concatenate(ids)
    dist = jnp.sum(jnp.square(points - centres[ids]), axis=-1)
    return ids, dist


@jax.jit
def _lloyd_step(points: Array, weights: Array, centres: Array) -> tuple[Array, Array, Array]:
    """One Lloyd step. Empty clusters are re-seeded at the points of largest weighted error, so
    every code stays in use. Returns (centres, weighted mean squared error, empty count)."""
    k = centres.shape[0]
    ids, dist = _assign(points, centres)
    sums = jax.ops.segment_sum(points * weights[:, None], ids, k)
    mass = jax.ops.segment_sum(weights, ids, k)
    updated = jnp.where(mass[:, None] > 0, sums / jnp.maximum(mass, 1e-12)[:, None], centres)
    empty = mass <= 0
    # The i-th empty centre takes the i-th worst point.
    worst = jnp.argsort(-(dist * weights))[:k]
    slot = jnp.cumsum(empty) - 1
    updated = jnp.where(empty[:, None], points[worst[jnp.clip(slot, 0, k - 1)]], updated)
    error = jnp.sum(dist * weights) / jnp.sum(weights)
    return updated, error, jnp.sum(empty)


def fit_kmeans(
    points: np.ndarray, weights: np.ndarray, k: int, key: PRNGKey, steps: int, progress=None
) -> tuple[np.ndarray, dict]:
    """Weighted k-means.

    Args:
      points: [M, D] float32 (distinct points).
      weights: [M] float32 counts.
      k: number of centres (<= M).
      key: draws the initial centres: k distinct points, with probability proportional to
        their weight (measured on the synthetic world: a sqrt(weight) draw fits rare edge cells
        better but the common flat ones worse, and lost 10 points of style-edit VQ ceiling).
      steps: Lloyd iterations.
      progress: optional callable(step, error) called after each iteration.
    Returns:
      (centres [k, D] float32, {"mse": final weighted mean squared error per point (sum over D),
       "empty_reseeded": empty clusters re-seeded in the last step})
    """
    if k > points.shape[0]:
        raise ValueError(f"k={k} centres but only {points.shape[0]} distinct points")
    p = weights / weights.sum()
    first = jax.random.choice(key, points.shape[0], (k,), replace=False, p=jnp.asarray(p))
    pts, w = jnp.asarray(points, jnp.float32), jnp.asarray(weights, jnp.float32)
    centres = pts[first]
    error, empty = jnp.nan, 0
    for step in range(steps):
        centres, error, empty = _lloyd_step(pts, w, centres)
        if progress is not None:
            progress(step, float(error))
    return np.asarray(centres), {"mse": float(error), "empty_reseeded": int(empty)}


def load_patch_codebook(path: str, patch_size: int) -> np.ndarray:
    """The float32 [K, p*p*3] codebook of the `PatchVQ` at `path` (a VQ folder or a bundle)."""
    # Imported here: reading a checkpoint is not what k-means needs otherwise.
    from editmgt_jax.checkpoint.convert.vq import load_vq
    from editmgt_jax.models.patch_vq import PatchVQ

    model, params = load_vq(path)
    if not isinstance(model, PatchVQ):
        raise ValueError(f"extend_from={path!r} holds a {type(model).__name__}, not a PatchVQ")
    if model.config.patch_size != patch_size:
        raise ValueError(
            f"extend_from={path!r} has patch_size {model.config.patch_size}; the config asks for "
            f"{patch_size}"
        )
    return np.asarray(params["codebook"], np.float32)


def extended_codebook(
    base: np.ndarray,
    points: np.ndarray,
    counts: np.ndarray,
    num_codes: int,
    quantile: float,
    key,
    steps: int,
    progress=None,
) -> tuple[np.ndarray, dict]:
    """`base` [K, D] followed by `num_codes - K` codes fitted on the points it codes worst.

    Args:
      base: the kept codes, float32 [K, D].
      points: distinct cells, float32 [M, D] in [0, 1]; counts [M].
      quantile: points whose squared error under `base` exceeds this quantile are refitted,
        weighted by count x error (a common, badly coded edge cell counts most).
    Returns:
      (codebook [num_codes, D], {"mse": weighted mean squared error of the points under the
      whole codebook (sum over D, as `fit_kmeans`), "extended_points": points refitted})
    """
    extra = num_codes - base.shape[0]
    if extra < 1:
        raise ValueError(
            f"num_codes={num_codes} must exceed the {base.shape[0]} codes of extend_from"
        )
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"extend_quantile must be in [0, 1), got {quantile}")
    ids = np.asarray(nearest_code(jnp.asarray(points), jnp.asarray(base)))
    error = np.square(points - base[ids]).sum(-1)
    hard = error > np.quantile(error, quantile)
    added, _ = fit_kmeans(
        points[hard], (counts * error)[hard].astype(np.float32), extra, key, steps, progress
    )
    codebook = np.concatenate([base, np.asarray(added, np.float32)])
    ids = np.asarray(nearest_code(jnp.asarray(points), jnp.asarray(codebook)))
    mse = float((np.square(points - codebook[ids]).sum(-1) * counts).sum() / counts.sum())
    return codebook, {"mse": mse, "extended_points": int(hard.sum())}
