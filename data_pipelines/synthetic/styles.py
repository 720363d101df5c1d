"""Global style edits: pure functions uint8 [H, W, 3] -> uint8 [H, W, 3]."""

from __future__ import annotations

import numpy as np

_LUMA = np.array([0.299, 0.587, 0.114])


def grayscale(image: np.ndarray) -> np.ndarray:
    gray = np.rint(image.astype(np.float64) @ _LUMA).clip(0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def invert(image: np.ndarray) -> np.ndarray:
    return (255 - image).astype(np.uint8)


def posterize(image: np.ndarray, levels: int = 3) -> np.ndarray:
    step = 255.0 / (levels - 1)
    return (np.rint(np.rint(image / step) * step)).clip(0, 255).astype(np.uint8)


def sepia(image: np.ndarray) -> np.ndarray:
    matrix = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])
    return np.rint(image.astype(np.float64) @ matrix.T).clip(0, 255).astype(np.uint8)


def pixelate(image: np.ndarray) -> np.ndarray:
    """Nearest-neighbour pixelation: each block of size/16 pixels (at least 2) takes the colour of
    its centre pixel. Point sampling keeps the scene's own colours (a block mean would mix them
    into shades no other image has, which a tokenizer cannot represent sharply)."""
    h, w, _ = image.shape
    block = max(2, h // 16)
    centre = block // 2
    rows = np.minimum(np.arange(h) // block * block + centre, h - 1)
    cols = np.minimum(np.arange(w) // block * block + centre, w - 1)
    return image[rows][:, cols].astype(np.uint8)


def line_drawing(image: np.ndarray) -> np.ndarray:
    """Dark outlines where the colour changes, on white paper."""
    img = image.astype(np.float64)
    edge = np.zeros(img.shape[:2])
    edge[:, 1:] += np.abs(img[:, 1:] - img[:, :-1]).sum(-1)
    edge[1:, :] += np.abs(img[1:, :] - img[:-1, :]).sum(-1)
    ink = np.clip(edge / 120.0, 0, 1)
    out = 255.0 * (1 - ink)
    return np.repeat(np.rint(out).astype(np.uint8)[..., None], 3, axis=-1)


STYLES = {
    "grayscale": grayscale,
    "invert": invert,
    "posterize": posterize,
    "sepia": sepia,
    "pixelate": pixelate,
    "line drawing": line_drawing,
}
