"""A hand-written antialiased bicubic resize (PIL's `Image.Resampling.BICUBIC`, written from its
definition, not from PIL's code or ours) and structured test images, for checking which filter
the code's resizes use: nearest, bilinear or a bicubic without antialiasing all miss it by far more
than the 2 levels of PIL's fixed-point arithmetic.

The filter: Keys' cubic convolution with a = -0.5 on pixel centres; when downsampling, the kernel
is stretched by the scale factor (antialias) and the weights renormalised where the image edge
cuts it; the horizontal pass first, rounded to uint8, then the vertical one.
"""

from __future__ import annotations

import numpy as np

KEYS_A = -0.5  # PIL's bicubic coefficient


def keys_cubic(x: np.ndarray, a: float = KEYS_A) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def bicubic_weights(n_in: int, n_out: int, start: float = 0.0, end: float | None = None):
    """[n_out, n_in]: the weights of each output pixel over the input pixels of the window
    [start, end) (pixel coordinates; the whole axis by default)."""
    end = n_in if end is None else end
    scale = (end - start) / n_out
    support = max(scale, 1.0)  # antialias: the kernel widens with the downscale factor
    centres = start + (np.arange(n_out) + 0.5) * scale
    w = keys_cubic((np.arange(n_in)[None, :] + 0.5 - centres[:, None]) / support)
    return w / w.sum(axis=1, keepdims=True)


def bicubic_resize(image: np.ndarray, size: tuple[int, int], box=None) -> np.ndarray:
    """uint8 [H, W, C] -> uint8 [h, w, C] (size = (h, w)); `box` = (x0, y0, x1, y1) as PIL's."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = box if box is not None else (0, 0, width, height)
    wx = bicubic_weights(width, size[1], x0, x1)
    wy = bicubic_weights(height, size[0], y0, y1)
    rows = np.clip(np.rint(np.einsum("ox,hxc->hoc", wx, np.asarray(image, np.float64))), 0, 255)
    return np.clip(np.rint(np.einsum("oy,ywc->owc", wy, rows)), 0, 255).astype(np.uint8)


def structured(height: int, width: int, cell: int = 3) -> np.ndarray:
    """uint8 [H, W, 3]: a checkerboard of `cell` px (red), a horizontal ramp (green) and
    diagonal stripes (blue): content every filter resamples differently."""
    y, x = np.mgrid[0:height, 0:width]
    checker = ((y // cell + x // cell) % 2) * 255
    ramp = x * 255 // max(width - 1, 1)
    stripes = (y * 7 + x * 3) % 256
    return np.stack([checker, ramp, stripes], axis=-1).astype(np.uint8)
