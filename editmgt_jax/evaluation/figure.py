"""A figure grid of edits: one row per edit (source | target | edited | heatmap | hold mask) under
its instruction."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

COLUMNS = ("source", "target", "edited", "attention", "held")
_TEXT_HEIGHT = 14
_GAP = 4


def _tile(image: np.ndarray, size: int) -> Image.Image:
    array = np.asarray(image, np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    return Image.fromarray(array).resize((size, size), Image.NEAREST)


def edit_grid(rows: Sequence[dict], tile: int = 128) -> np.ndarray:
    """rows: dicts with `instruction` (str) and uint8 images under COLUMNS' names ([H, W, 3] or
    [H, W]) -> uint8 [height, width, 3] figure with a header of column names."""
    width = len(COLUMNS) * (tile + _GAP) + _GAP
    row_height = _TEXT_HEIGHT + tile + _GAP
    canvas = Image.new("RGB", (width, _TEXT_HEIGHT + len(rows) * row_height), "white")
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(COLUMNS):
        draw.text((_GAP + c * (tile + _GAP), 1), name, fill="black")
    for r, row in enumerate(rows):
        top = _TEXT_HEIGHT + r * row_height
        draw.text((_GAP, top + 1), row["instruction"][:80], fill=(30, 30, 160))
        for c, name in enumerate(COLUMNS):
            canvas.paste(_tile(row[name], tile), (_GAP + c * (tile + _GAP), top + _TEXT_HEIGHT))
    return np.asarray(canvas)
