"""Scores edits of examples with ground-truth masks, and summarizes them per category.

An example is anything with `source`, `target` (uint8 [H, W, 3]), `mask` (uint8 [H, W], > 0 =
edited), `instruction` and `category` (the synthetic world's `SyntheticExample`). An edit is scored
from two `EditResult`s of the same example: with region-hold on (the one judged) and off (only its
tokens are used, for the changed-outside comparison).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from editmgt_jax.evaluation import metrics

# Metrics averaged per category and overall (NaNs, e.g. PSNR outside a whole-image style edit,
# are left out of the means and counted in `<name>_count`).
MEAN_KEYS = (
    "success",
    "clean",
    "progress",
    "psnr_outside",
    "ssim_outside",
    "lpips_outside",
    "auroc",
    "iou",
    "changed_outside_hold",
    "changed_outside_no_hold",
    "target_tokens_changed",
    "target_tokens_unchanged",
    "held_fraction",
    "vq_ceiling",
    "vq_ceiling_paste_back",
    "vq_ceiling_clean",
)


def score_edit(example: Any, held: Any, free: Any | None, hold_threshold: float) -> dict:
    """Metrics of one edit (`held`: result with region-hold; `free`: without, or None)."""
    mask = np.asarray(example.mask) > 0
    grid = held.tokens.shape
    coverage = metrics.cell_coverage(mask, grid)
    region = coverage >= 0.5  # token cells mostly inside the edit region
    record = dict(
        instruction=example.instruction,
        category=example.category,
        progress=metrics.edit_progress(example.source, example.target, held.image, mask),
        psnr_outside=metrics.psnr_outside(example.source, held.image, mask),
        mse_outside=metrics.outside_mse(example.source, held.image, mask),
        ssim_outside=metrics.ssim_outside(example.source, held.image, mask),
        auroc=metrics.auroc(held.heatmap, region),
        iou=metrics.iou(held.heatmap >= hold_threshold, region),
        changed_outside_hold=metrics.changed_outside(held.source_tokens, held.tokens, coverage),
        held_fraction=float(np.mean(held.hold_mask)),
    )
    record["success"] = float(record["progress"] >= 0.5)
    record["clean"] = float(metrics.edit_clean(example.source, example.target, held.image, mask))
    if free is not None:
        record["changed_outside_no_hold"] = metrics.changed_outside(
            free.source_tokens, free.tokens, coverage
        )
    return record


def target_token_records(
    examples: Sequence[Any], results: Sequence[Any], tokenize: Any, batch_size: int = 64
) -> list[dict]:
    """Per edit, `target_tokens_changed` / `_unchanged` (`metrics.target_tokens_reproduced` of
    the result's tokens against the target's). `tokenize` maps uint8 [N, H, W, 3] to token ids
    (`Editor.tokenize`)."""
    out = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        targets = tokenize(np.stack([e.target for e in chunk]))
        for result, target in zip(results[start : start + batch_size], targets, strict=True):
            changed, unchanged = metrics.target_tokens_reproduced(
                result.source_tokens, target, result.tokens
            )
            out.append(dict(target_tokens_changed=changed, target_tokens_unchanged=unchanged))
    return out


def paste_back_unchanged(
    source: np.ndarray, decoded: np.ndarray, source_ids: np.ndarray, ids: np.ndarray
) -> np.ndarray:
    """`decoded` with the `source` pixels on every token cell whose id equals the source's (what
    paste-back does with the cells an edit left unchanged). Images [H, W, 3], ids [h, w]."""
    stride = source.shape[0] // ids.shape[0]
    same = np.kron(ids == source_ids, np.ones((stride, stride), bool))
    return np.where(same[..., None], source, decoded)


def vq_ceiling(
    examples: Sequence[Any],
    reconstruct: Any,
    tokenize: Any = None,
    batch_size: int = 64,
    judge: Any = metrics.edit_success,
    reconstruct_edit: Any = None,
) -> list[float]:
    """Per example, 1.0 if the tokenizer's round trip of the *target* counts as a successful edit
    (`judge(source, target, edited, mask)`: `metrics.edit_success`, or `metrics.edit_clean`).

    That is the success of a transformer that predicted every target token exactly, so the share
    over a split bounds the success any transformer can reach with this VQ. `reconstruct` maps
    uint8 [N, H, W, 3] to its VQ round trip (`Editor.reconstruct`). With `tokenize`
    (`Editor.tokenize`), cells whose target id equals the source's keep the source's pixels, as
    paste-back does. With `reconstruct_edit` (`Editor.reconstruct_edit(sources, targets)`: the
    same paste-back, and a PatchVQ's source-guided refiner on the changed cells), that instead.
    """
    out = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        targets = np.stack([e.target for e in chunk])
        if reconstruct_edit is not None:
            rebuilt = reconstruct_edit(np.stack([e.source for e in chunk]), targets)
        else:
            rebuilt = reconstruct(targets)
        if tokenize is not None and reconstruct_edit is None:
            target_ids = tokenize(targets)
            source_ids = tokenize(np.stack([e.source for e in chunk]))
            rebuilt = [
                paste_back_unchanged(e.source, image, s, t)
                for e, image, s, t in zip(chunk, rebuilt, source_ids, target_ids, strict=True)
            ]
        for example, image in zip(chunk, rebuilt, strict=True):
            mask = np.asarray(example.mask) > 0
            out.append(float(judge(example.source, example.target, image, mask)))
    return out


def category_means(examples: Sequence[Any], values: Sequence[float]) -> dict[str, float]:
    """{category: mean of `values` over its examples}, categories sorted (one value per example,
    e.g. `vq_ceiling`'s)."""
    by: dict[str, list[float]] = {}
    for example, value in zip(examples, values, strict=True):
        by.setdefault(example.category, []).append(float(value))
    return {c: float(np.mean(v)) for c, v in sorted(by.items())}


def _mean(values: Sequence[float]) -> tuple[float | None, int]:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return (float(np.mean(finite)) if finite else None), len(finite)


def summarize(records: Sequence[dict]) -> dict[str, Any]:
    """{"overall": {...}, "per_category": {category: {...}}}: means of MEAN_KEYS, counts, and the
    PSNR of the pooled outside-mask MSE (robust to the 100 dB cap of identical images)."""

    def block(rows: Sequence[dict]) -> dict[str, Any]:
        out: dict[str, Any] = {"count": len(rows)}
        for key in MEAN_KEYS:
            mean, n = _mean([r.get(key) for r in rows])
            out[key] = mean
            if n != len(rows):
                out[f"{key}_count"] = n
        mse, _ = _mean([r["mse_outside"] for r in rows])
        out["psnr_outside_pooled"] = None if mse is None else metrics.psnr_from_mse(mse)
        return out

    categories = sorted({r["category"] for r in records})
    return dict(
        overall=block(records),
        per_category={c: block([r for r in records if r["category"] == c]) for c in categories},
    )


def lpips_outside(
    lpips: tuple[Any, Any], examples: Sequence[Any], edited: Sequence[np.ndarray]
) -> list[float]:
    """LPIPS between each source and its edit with the edit region set back to the source (so only
    changes outside the mask count); NaN for whole-image edits."""
    from editmgt_jax.training.vq_losses import lpips_distance

    sources, composites, valid = [], [], []
    for example, image in zip(examples, edited, strict=True):
        mask = np.asarray(example.mask) > 0
        valid.append(not mask.all())
        sources.append(example.source / 255.0)
        composites.append(np.where(mask[..., None], example.source, image) / 255.0)
    distances = np.asarray(
        lpips_distance(
            *lpips, np.stack(composites, dtype=np.float32), np.stack(sources).astype(np.float32)
        )
    )
    return [float(d) if ok else float("nan") for d, ok in zip(distances, valid, strict=True)]
