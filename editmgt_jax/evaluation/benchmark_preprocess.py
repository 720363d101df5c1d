"""Image preprocessing of the benchmarks' evaluators, reproduced on PIL / numpy (host side).

Each benchmark feeds its backbones through its own library's transform; these functions do the
same steps (images are uint8 RGB [H, W, 3]; outputs float32 [size, size, 3], channels last):

- `clip_pixels(..., crop="round")`: OpenAI CLIP's `clip.load` transform (MagicBrush, Emu Edit):
  torchvision `Resize(n_px, BICUBIC)` of the shorter side, `CenterCrop(n_px)` (offsets rounded),
  `ToTensor`, `Normalize(CLIP mean, std)`.
- `clip_pixels(..., crop="floor")`: transformers' `CLIPImageProcessor` (torchmetrics' CLIPScore,
  used by PIE-Bench): the same resize, a centre crop with floored offsets, rescale 1/255,
  normalise.
- `dino_pixels`: MagicBrush's DINO transform: `Resize(256, interpolation=3)` (bicubic),
  `CenterCrop(224)`, `ToTensor`, `Normalize(ImageNet mean, std)`.
- `structure_pixels`: PIE-Bench's structure-distance input: the float image on the 0-255 scale
  (it never divides by 255), `Resize(224, max_size=480)` on a tensor, then `Normalize(ImageNet
  mean, std)` of those 0-255 values. The resize is bilinear *without* antialiasing: PnPInversion
  pins torch 1.12.1 / torchvision 0.13.1, whose tensor `Resize` calls
  `torch.nn.functional.interpolate(mode="bilinear", align_corners=False)` with no antialias
  (`resize_bilinear_no_antialias`); `antialias=True` gives torchvision >= 0.17's default instead.

Resizes of uint8 images go through PIL, as torchvision's do for PIL images (uint8 results); the
antialiased float resize uses PIL's float mode, whose antialiased bilinear filter is the one
torchvision's tensor antialias reproduces.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# MagicBrush's DINO transform (evaluation/image_eval.py): Resize(256), CenterCrop(224).
DINO_RESIZE, DINO_CROP = 256, 224
# PIE-Bench's structure distance (evaluation/matrics_calculator.py, LossG):
# Resize(dino_global_patch_size=224, max_size=480).
STRUCTURE_RESIZE, STRUCTURE_MAX_SIZE = 224, 480
CROP_ROUNDING = ("round", "floor")


def shorter_side_size(
    height: int, width: int, size: int, max_size: int | None = None
) -> tuple[int, int]:
    """(new_height, new_width) of torchvision's `Resize(size, max_size)` (and transformers'
    `shortest_edge` resize): the shorter side becomes `size`, the longer int(size * long / short);
    with `max_size`, a longer side above it is brought down to it, the shorter scaled alike."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    if max_size is not None and new_long > max_size:
        new_short, new_long = int(max_size * new_short / new_long), max_size
    return (new_long, new_short) if width <= height else (new_short, new_long)


def resize_shorter(image: np.ndarray, size: int, resample=Image.Resampling.BICUBIC) -> np.ndarray:
    """uint8 [H, W, 3] with its shorter side resized to `size` (PIL, as torchvision does)."""
    height, width = image.shape[:2]
    new_h, new_w = shorter_side_size(height, width, size)
    if (new_h, new_w) == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((new_w, new_h), resample))


def center_crop(image: np.ndarray, size: int, rounding: str = "round") -> np.ndarray:
    """The central size x size window of [H, W, ...]. Offsets: "round" = torchvision
    (int(round((H - size) / 2))), "floor" = transformers ((H - size) // 2). The image must be at
    least `size` on both sides (both resize first)."""
    if rounding not in CROP_ROUNDING:
        raise ValueError(f"rounding={rounding!r}; expected one of {CROP_ROUNDING}")
    height, width = image.shape[:2]
    if height < size or width < size:
        raise ValueError(f"Cannot centre-crop {size}x{size} from {height}x{width}")
    if rounding == "round":
        top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    else:
        top, left = (height - size) // 2, (width - size) // 2
    return image[top : top + size, left : left + size]


def normalise(image: np.ndarray, mean: Sequence[float], std: Sequence[float], scale: float = 255.0):
    """float32 (image / scale - mean) / std over the last (channel) axis."""
    x = np.asarray(image, np.float32) / np.float32(scale)
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def clip_pixels(images: Sequence[np.ndarray], size: int, crop: str = "round") -> np.ndarray:
    """float32 [B, size, size, 3]: CLIP's preprocessing (module docstring) of uint8 images."""
    out = [
        normalise(center_crop(resize_shorter(im, size), size, crop), CLIP_MEAN, CLIP_STD)
        for im in images
    ]
    return np.stack(out)


def dino_pixels(images: Sequence[np.ndarray]) -> np.ndarray:
    """float32 [B, 224, 224, 3]: MagicBrush's DINO preprocessing of uint8 images."""
    out = [
        normalise(
            center_crop(resize_shorter(im, DINO_RESIZE), DINO_CROP, "round"),
            IMAGENET_MEAN,
            IMAGENET_STD,
        )
        for im in images
    ]
    return np.stack(out)


def resize_float_bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float [H, W, C] -> float32 [h, w, C] (size = (h, w)), antialiased bilinear per channel."""
    if image.shape[:2] == tuple(size):
        return np.asarray(image, np.float32)
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[..., c], np.float32)).resize(
                (size[1], size[0]), Image.Resampling.BILINEAR
            )
        )
        for c in range(image.shape[-1])
    ]
    return np.stack(channels, axis=-1).astype(np.float32)


def _bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index0, index1, weight1) per output position of PyTorch's `upsample_bilinear2d` with
    align_corners=False and no scale factor: source = (dst + 0.5) * in / out - 0.5, clamped at
    0; index1 = index0 + 1 except at the last input sample."""
    scale = np.float32(in_size / out_size)
    src = np.maximum((np.arange(out_size, dtype=np.float32) + 0.5) * scale - 0.5, 0.0)
    i0 = src.astype(np.int64)  # floor: src >= 0
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, (src - i0).astype(np.float32)


def resize_bilinear_no_antialias(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float [H, W, C] -> float32 [h, w, C] (size = (h, w)): torch 1.12's
    `interpolate(mode="bilinear", align_corners=False)` (what torchvision 0.13.1's tensor
    `Resize` runs): each output pixel mixes the 2 x 2 input samples around its centre, however
    far it downsamples (no antialias)."""
    x = np.asarray(image, np.float32)
    if x.shape[:2] == tuple(size):
        return x
    r0, r1, wr = _bilinear_taps(x.shape[0], size[0])
    c0, c1, wc = _bilinear_taps(x.shape[1], size[1])
    rows = x[r0] * (1 - wr)[:, None, None] + x[r1] * wr[:, None, None]
    out = rows[:, c0] * (1 - wc)[None, :, None] + rows[:, c1] * wc[None, :, None]
    return out.astype(np.float32)


def structure_pixels(image: np.ndarray, antialias: bool = False) -> np.ndarray:
    """float32 [h, w, 3]: PIE-Bench's structure-distance preprocessing of a float image on the
    0-255 scale (already masked where the evaluator masks); `antialias=False` is PnPInversion's
    torchvision 0.13.1 (module docstring)."""
    height, width = image.shape[:2]
    size = shorter_side_size(height, width, STRUCTURE_RESIZE, STRUCTURE_MAX_SIZE)
    resize = resize_float_bilinear if antialias else resize_bilinear_no_antialias
    resized = resize(np.asarray(image, np.float32), size)
    return normalise(resized, IMAGENET_MEAN, IMAGENET_STD, scale=1.0)
