"""An edit's outputs: lossless PNGs under names of their own, and the info box.

Every request writes its images into a fresh folder `<root>/<id>/` as `<id>-<kind>.png`, each
written atomically (`editmgt_jax.atomic`), so no file is ever rewritten while a client may be
reading it. PNG, not Gradio's default WebP: WebP would change the very pixels paste-back keeps.

Example:
    >>> overlay(np.zeros((1, 1, 3), np.uint8), np.full((1, 1, 3), 200, np.uint8)).tolist()
    [[[100, 100, 100]]]
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from typing import Any

import numpy as np

from editmgt_jax.editing import images as imio
from editmgt_jax.serving.batching import Ran
from editmgt_jax.serving.inputs import Edit

KINDS = ("source", "edited", "heatmap", "hold")


@dataclasses.dataclass(frozen=True)
class Written:
    """Paths of one edit's PNGs."""

    source: str
    edited: str
    heatmap: str
    hold: str


def overlay(image: np.ndarray, colours: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """uint8 [H, W, 3]: `colours` blended over `image` with weight `alpha` (rounded)."""
    blend = (1.0 - alpha) * image.astype(np.float64) + alpha * colours.astype(np.float64)
    return np.clip(np.round(blend), 0, 255).astype(np.uint8)


def write_images(ran: Ran, root: str) -> Written:
    """Writes the source, the edit, the heatmap over the source and the hold mask as PNGs."""
    result = ran.result
    name = uuid.uuid4().hex
    folder = os.path.join(root, name)
    os.makedirs(folder)
    pixels = dict(
        source=result.source,
        edited=result.image,
        heatmap=overlay(result.source, result.heatmap_image()),
        hold=result.hold_image(),
    )
    paths = {}
    for kind in KINDS:
        paths[kind] = os.path.join(folder, f"{name}-{kind}.png")
        imio.save_image(paths[kind], pixels[kind])
    return Written(**paths)


def settings(edit: Edit) -> dict[str, Any]:
    """The settings an edit ran with (JSON-ready)."""
    request = edit.request
    return dict(
        instruction=request.instruction,
        query=request.query,
        steps=edit.steps,
        guidance=request.guidance,
        reference_strength=edit.reference_strength,
        hold_threshold=request.hold_threshold,
        seed=request.seed,
        paste_back=edit.paste_back,
        mask="painted" if request.mask is not None else "whole image",
    )


def info(edit: Edit, ran: Ran) -> dict[str, Any]:
    """The info box of a finished edit (JSON-ready)."""
    result = ran.result
    return dict(
        seconds=round(ran.seconds, 3),
        settings=settings(edit),
        size=list(result.source.shape[:2]),  # [height, width]
        bucket=list(result.bucket),  # [height, width] the model saw
        mask_box=None if edit.mask_box is None else list(edit.mask_box),
        held_fraction=round(float(np.mean(result.hold_mask)), 4),
        batch=dict(requests=ran.requests_in_call, size=ran.batch_size),
        warnings=list(result.warnings),
        error=None,
    )


def error_info(error: str, edit: Edit | None = None) -> dict[str, Any]:
    """The info box of a request that did not run."""
    return dict(
        error=error,
        settings=None if edit is None else settings(edit),
        warnings=[] if edit is None else list(edit.request.warnings),
    )
