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
    array = np.asarray(image)
    array = array.astype(np.uint8) * 255 if array.dtype == bool else array.astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    return Image.fromarray(array).resize((size, size), Image.NEAREST)


def edit_grid(
    rows: Sequence[dict], tile: int = 128, columns: Sequence[str] = COLUMNS
) -> np.ndarray:
    """rows: dicts with `instruction` (str) and uint8 images under the `columns` names
    ([H, W, 3], or [H, W] grey / bool) -> uint8 [height, width, 3] figure with a header of
    column names."""
    width = len(columns) * (tile + _GAP) + _GAP
    row_height = _TEXT_HEIGHT + tile + _GAP
    canvas = Image.new("RGB", (width, _TEXT_HEIGHT + len(rows) * row_height), "white")
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(columns):
        draw.text((_GAP + c * (tile + _GAP), 1), name, fill="black")
    for r, row in enumerate(rows):
        top = _TEXT_HEIGHT + r * row_height
        draw.text((_GAP, top + 1), row["instruction"][:80], fill=(30, 30, 160))
        for c, name in enumerate(columns):
            canvas.paste(_tile(row[name], tile), (_GAP + c * (tile + _GAP), top + _TEXT_HEIGHT))
    return np.asarray(canvas)


_PALETTE = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14))


def line_plot(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    size: tuple[int, int] = (480, 280),
) -> np.ndarray:
    """A plain line chart (no plotting library): {name: (x, y)} -> uint8 [height, width, 3].

    Axes span the data's range; the title line names each series in its colour with its last value.
    """
    width, height = size
    left, right, top, bottom = 48, 10, 30, 24
    canvas = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(canvas)
    xs = np.concatenate([np.asarray(x, float) for x, _ in series.values()])
    ys = np.concatenate([np.asarray(y, float) for _, y in series.values()])
    x0, x1 = float(xs.min()), float(xs.max()) or 1.0
    y0, y1 = float(np.nanmin(ys)), float(np.nanmax(ys))
    if y1 == y0:
        y1 = y0 + 1.0

    def to_px(x: float, y: float) -> tuple[float, float]:
        px = left + (x - x0) / max(x1 - x0, 1e-12) * (width - left - right)
        py = height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)
        return px, py

    draw.rectangle((left, top, width - right, height - bottom), outline=(120, 120, 120))
    for frac in (0.0, 0.5, 1.0):
        y = y0 + frac * (y1 - y0)
        draw.text((2, to_px(x0, y)[1] - 5), f"{y:.3g}", fill="black")
    draw.text((left, height - bottom + 4), f"{x0:g}", fill="black")
    draw.text((width - right - 40, height - bottom + 4), f"{x1:g}", fill="black")
    draw.text((4, 2), title, fill="black")
    legend_x = 4
    for i, (name, (x, y)) in enumerate(series.items()):
        colour = _PALETTE[i % len(_PALETTE)]
        points = [to_px(a, b) for a, b in zip(x, y, strict=True) if np.isfinite(b)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        label = f"{name} {y[-1]:.3g}" if len(y) else name
        draw.text((legend_x, 15), label, fill=colour)
        legend_x += 8 * len(label) + 12
    return np.asarray(canvas)
