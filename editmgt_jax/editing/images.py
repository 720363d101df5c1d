"""Host-side image handling for the Editor: reading, bucketing, masks, paste-back, heatmaps, saving.

Pure numpy / PIL; nothing here touches JAX. Images are uint8 RGB [H, W, 3] at the original
(EXIF-oriented) size unless said otherwise; masks are bool [H, W], True = may change.

Example:
    >>> bucket_size(600, 800, resolution=1024, multiple=32)
    (768, 1024)
    >>> token_mask(np.eye(4, dtype=bool), (2, 2)).tolist()
    [[True, False], [False, True]]
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from editmgt_jax.atomic import atomic_path

# Above this many pixels an input is refused (PIL itself refuses ~179M as a decompression bomb).
DEFAULT_MAX_PIXELS = 50_000_000
# Output formats by file extension.
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}
# Mask pixels at or above this grey level (of 255) may change.
MASK_THRESHOLD = 128
# Transparent pixels are composited over white before editing.
BACKGROUND = (255, 255, 255)
# A dark-blue -> red -> yellow ramp for score heatmaps (value 0, 0.5, 1).
_HEAT_RAMP = np.array([[20, 20, 120], [220, 40, 40], [255, 240, 80]], np.float64)


class ImageInputError(ValueError):
    """An input file that cannot be used (missing, not an image, too large, bad mask)."""


def _open(source: Any, what: str, max_pixels: int) -> tuple[Image.Image, str]:
    """(oriented PIL image, name for messages) from a path, PIL image or array."""
    if isinstance(source, Image.Image):
        image, name = source, f"<{what} image>"
    elif isinstance(source, np.ndarray):
        image, name = Image.fromarray(source), f"<{what} array>"
    else:
        name = os.fspath(source)
        if not os.path.isfile(name):
            raise ImageInputError(f"{what} file {name!r} does not exist")
        try:
            image = Image.open(name)
        except (UnidentifiedImageError, OSError) as e:
            raise ImageInputError(f"{what} file {name!r} is not a readable image: {e}") from e
    width, height = image.size
    if width * height > max_pixels:
        raise ImageInputError(
            f"{what} {name!r} is {width}x{height} = {width * height} pixels, over the limit of "
            f"{max_pixels} (raise max_pixels to allow it)"
        )
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageInputError(f"{what} {name!r} cannot be decoded: {e}") from e
    return image, name


def _to_rgb(image: Image.Image) -> np.ndarray:
    """uint8 [H, W, 3] from any PIL mode (16-bit grey scaled, alpha over white, CMYK converted)."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        grey = np.asarray(image, np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or grey.max() > 255 else 255.0
        grey = np.clip(np.round(grey / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if image.mode == "F":
        grey = np.clip(np.round(np.asarray(image, np.float64) * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def load_image(source: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, str]:
    """(uint8 [H, W, 3] RGB in EXIF orientation, name) from a path, PIL image or array.

    Grey (L, 16-bit I;16), palette, CMYK and alpha images become RGB (transparent pixels over
    white). Raises `ImageInputError` naming the file for a missing, unreadable or too large one.
    """
    image, name = _open(source, "Image", max_pixels)
    return _to_rgb(image), name


def load_mask(
    source: Any, size: tuple[int, int], max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, str | None]:
    """(bool [H, W] mask at the image's `size` = (H, W), warning or None); white = may change.

    A mask of another size is resized (nearest) and the warning says so.
    """
    image, name = _open(source, "Mask", max_pixels)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA").convert("L")
    elif image.mode.startswith("I") or image.mode == "F":
        image = Image.fromarray(_to_rgb(image)).convert("L")
    else:
        image = image.convert("L")
    warning = None
    height, width = size
    if image.size != (width, height):
        warning = (
            f"Mask {name!r} is {image.size[0]}x{image.size[1]} but the image is "
            f"{width}x{height}; resized it (nearest)"
        )
        image = image.resize((width, height), Image.Resampling.NEAREST)
    return np.asarray(image) >= MASK_THRESHOLD, warning


def bucket_size(height: int, width: int, resolution: int, multiple: int) -> tuple[int, int]:
    """(h, w): the longer side scaled to `resolution`, aspect ratio kept, both sides rounded to
    multiples of `multiple` (at least one multiple)."""
    if resolution < multiple:
        raise ValueError(f"resolution {resolution} is below the token stride {multiple}")
    scale = resolution / max(height, width)

    def snap(side: int) -> int:
        return max(multiple, int(round(side * scale / multiple)) * multiple)

    return snap(height), snap(width)


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [h, w, 3] -> uint8 [H, W, 3] (size = (H, W)), bicubic; a no-op at the same size."""
    if image.shape[:2] == tuple(size):
        return image
    pil = Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BICUBIC)
    return np.asarray(pil)


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] -> float32 in [0, 1]."""
    return image.astype(np.float32) / 255.0


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float [..., 3] in [0, 1] -> uint8 (rounded, clipped)."""
    return np.clip(np.round(np.asarray(image, np.float32) * 255.0), 0, 255).astype(np.uint8)


def token_mask(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """bool [h, w]: a token may change if any pixel of its cell may (the mask is area-resized to
    the grid first, so every white pixel reaches the token that covers it)."""
    h, w = grid
    pil = Image.fromarray(mask.astype(np.uint8) * 255)
    cover = np.asarray(pil.resize((w, h), Image.Resampling.BOX), np.uint8)
    return cover > 0


def upsample_nearest(grid_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[h, w] (bool or float) -> [H, W], nearest (each token's cell takes its value)."""
    height, width = size
    h, w = grid_map.shape
    rows = np.minimum((np.arange(height) * h) // height, h - 1)
    cols = np.minimum((np.arange(width) * w) // width, w - 1)
    return grid_map[rows[:, None], cols[None, :]]


def paste_back(edited: np.ndarray, original: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The edited image with the original's exact pixels where `keep` (bool [H, W]) is True."""
    if edited.shape != original.shape or keep.shape != original.shape[:2]:
        raise ValueError(
            f"paste_back shapes differ: edited {edited.shape}, original {original.shape}, "
            f"keep {keep.shape}"
        )
    return np.where(keep[..., None], original, edited)


def heatmap_image(scores: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W, 3] colour map of scores [h, w] (clipped to [0, 1]), nearest-upsampled."""
    values = np.clip(upsample_nearest(np.asarray(scores, np.float64), size), 0.0, 1.0)
    position = values * (len(_HEAT_RAMP) - 1)
    low = np.minimum(np.floor(position).astype(int), len(_HEAT_RAMP) - 2)
    frac = (position - low)[..., None]
    rgb = _HEAT_RAMP[low] * (1 - frac) + _HEAT_RAMP[low + 1] * frac
    return np.round(rgb).astype(np.uint8)


def mask_image(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W] (255 where True) of a bool [h, w] map, nearest-upsampled."""
    return upsample_nearest(np.asarray(mask, bool), size).astype(np.uint8) * 255


def output_format(path: str) -> str:
    """PIL format name of an output path by its extension; raises for an unknown one."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ValueError(
            f"Output {path!r}: unknown image extension {ext!r}; use one of {sorted(FORMATS)}"
        )
    return FORMATS[ext]


def save_image(path: str, pixels: np.ndarray) -> None:
    """Writes uint8 [H, W, 3] or [H, W] atomically (format from the extension)."""
    fmt = output_format(path)
    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format=fmt)
