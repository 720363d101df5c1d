"""Image decoding to RGB uint8 and the joint resize/crop that keeps source, target and mask aligned.

Pure functions of their inputs (the crop offset is an argument), so workers and tests agree.

Example:
    >>> import numpy as np
    >>> src, tgt = np.zeros((60, 80, 3), np.uint8), np.zeros((120, 160, 3), np.uint8)
    >>> a, b, m = joint_resize_crop(src, tgt, None, (32, 32), offset=(0.5, 0.5))
    >>> a.shape, b.shape, m
    ((32, 32, 3), (32, 32, 3), None)
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
from PIL import Image, ImageOps

# Larger than any real photo in the edit sets (CrispEdit: short side ~1024), far below what would
# exhaust memory; a header claiming more is a bad row, caught before decoding the pixels.
MAX_PIXELS = 8192 * 8192
MIN_SIDE = 8
MAX_ASPECT = 20.0
MASK_THRESHOLD = 127


class DecodeError(ValueError):
    """An image that cannot be used; `reason` is a short key for counting."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _check_size(width: int, height: int) -> None:
    if (
        min(width, height) < MIN_SIDE
        or width * height > MAX_PIXELS
        or max(width, height) / max(1, min(width, height)) > MAX_ASPECT
    ):
        raise DecodeError(
            "absurd_size",
            f"image size {width}x{height} is outside [{MIN_SIDE}px side, {MAX_PIXELS} pixels, "
            f"aspect {MAX_ASPECT}]",
        )


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Any PIL mode -> uint8 [H, W, 3]; transparency is composited over white."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image).astype(np.float64)
        # 16-bit data in an int container: scale down; 8-bit data stored as "I" stays as is.
        scale = 257.0 if values.max(initial=0) > 255 or mode.startswith("I;16") else 1.0
        gray = np.clip(np.rint(values / scale), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode == "F":
        gray = np.clip(np.rint(np.asarray(image)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    if mode != "RGB":
        image = image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV
    return np.asarray(image)


def open_image(data: bytes, min_side: int | None = None) -> Image.Image:
    """Opens and fully decodes encoded image bytes, upright (EXIF orientation applied).

    Args:
      data: PNG/JPEG/... bytes.
      min_side: optional; a JPEG may then decode at 1/2, 1/4 or 1/8 scale (much faster) while its
        short side stays >= `min_side`.

    Raises:
      DecodeError: reason "empty_bytes", "undecodable", "truncated" or "absurd_size".
    """
    if not data:
        raise DecodeError("empty_bytes", "image bytes are empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_size(*image.size)
            if min_side is not None and image.format == "JPEG":
                width, height = image.size
                scale = min_side / min(width, height)
                image.draft(image.mode, (math.ceil(width * scale), math.ceil(height * scale)))
            image.load()
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DecodeError("absurd_size", f"decompression bomb: {err}") from err
    except Image.UnidentifiedImageError as err:
        raise DecodeError("undecodable", f"not an image ({len(data)} bytes)") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        reason = "truncated" if "truncat" in str(err).lower() else "undecodable"
        raise DecodeError(reason, f"cannot decode image ({len(data)} bytes): {err}") from err
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block should not lose a good image
        pass
    return image


def decode_image(data: bytes, min_side: int | None = None) -> np.ndarray:
    """Encoded bytes -> upright RGB uint8 [H, W, 3] (L, RGBA, P, CMYK, 16-bit all handled)."""
    return _to_rgb(open_image(data, min_side))


def decode_mask(data: bytes) -> np.ndarray:
    """Mask bytes -> uint8 [H, W] with values 0 or 255 (white = edit region)."""
    image = open_image(data)
    if image.mode not in ("L", "1"):
        gray = _to_rgb(image).max(axis=-1)
    else:
        gray = np.asarray(image.convert("L"))
    return np.where(gray > MASK_THRESHOLD, 255, 0).astype(np.uint8)


def crop_box(
    height: int, width: int, size: tuple[int, int], offset: tuple[float, float]
) -> tuple[float, float, float, float]:
    """The relative box (y0, x0, y1, x1) in [0, 1] of the largest `size`-aspect crop of an image.

    `offset` (oy, ox) in [0, 1] places the crop: 0 = top/left, 0.5 = centre, 1 = bottom/right.
    """
    out_h, out_w = size
    image_aspect, out_aspect = width / height, out_w / out_h
    if image_aspect > out_aspect:
        rel_h, rel_w = 1.0, out_aspect / image_aspect
    else:
        rel_h, rel_w = image_aspect / out_aspect, 1.0
    y0 = offset[0] * (1.0 - rel_h)
    x0 = offset[1] * (1.0 - rel_w)
    return y0, x0, y0 + rel_h, x0 + rel_w


def _resize_box(
    image: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int], resample
) -> np.ndarray:
    h, w = image.shape[:2]
    y0, x0, y1, x1 = box[0] * h, box[1] * w, box[2] * h, box[3] * w
    corners = np.array([y0, x0, y1, x1])
    on_grid = np.allclose(corners, np.rint(corners), atol=1e-6)
    if on_grid and (round(y1 - y0), round(x1 - x0)) == tuple(size):
        # A pixel-aligned crop at scale 1 needs no resampling (the common case for the source).
        iy0, ix0 = round(y0), round(x0)
        return np.ascontiguousarray(image[iy0 : iy0 + size[0], ix0 : ix0 + size[1]])
    pil = Image.fromarray(image)
    return np.asarray(pil.resize((size[1], size[0]), resample, box=(x0, y0, x1, y1)))


def joint_resize_crop(
    source: np.ndarray,
    target: np.ndarray,
    mask: np.ndarray | None,
    size: tuple[int, int],
    offset: tuple[float, float] = (0.5, 0.5),
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Crops the same relative window of source, target (and mask) and resizes each to `size`.

    The window is chosen on the source (largest crop with the aspect of `size`, placed by `offset`)
    and applied in relative coordinates, so pairs whose sizes differ (a rescaled target) stay
    aligned. Images use an antialiased bicubic filter; the mask a box filter where any edited
    pixel marks the output pixel edited (a mask may grow, never shrink).

    Args:
      source: uint8 [Hs, Ws, 3]. target: uint8 [Ht, Wt, 3]. mask: uint8 [Hm, Wm] or None.
      size: (height, width) out.
      offset: (oy, ox) in [0, 1], the crop position.

    Returns:
      source, target: uint8 [height, width, 3]; mask: uint8 [height, width] in {0, 255} or None.
    """
    if not (0.0 <= offset[0] <= 1.0 and 0.0 <= offset[1] <= 1.0):
        raise ValueError(f"offset {offset} must lie in [0, 1] x [0, 1]")
    height, width = source.shape[:2]
    y0, x0, y1, x1 = crop_box(height, width, size, offset)
    # Snap the window to the source's pixel grid: same alignment, and no resampling of the
    # source when it already has the output size along the short side.
    box = (
        round(y0 * height) / height,
        round(x0 * width) / width,
        round(y1 * height) / height,
        round(x1 * width) / width,
    )
    bicubic, box_filter = Image.Resampling.BICUBIC, Image.Resampling.BOX
    out_source = _resize_box(source, box, size, bicubic)
    out_target = _resize_box(target, box, size, bicubic)
    out_mask = None
    if mask is not None:
        out_mask = np.where(_resize_box(mask, box, size, box_filter) > 0, 255, 0).astype(np.uint8)
    return out_source, out_target, out_mask
