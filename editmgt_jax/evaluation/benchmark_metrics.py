"""Metrics of the standard editing benchmarks, defined as their evaluators compute them (numpy).

Images are uint8 RGB [H, W, 3]; embeddings are float vectors [E]. Each docstring names the code
its definition comes from:

- MagicBrush: `evaluation/image_eval.py` of OSU-NLP-Group/MagicBrush.
- Emu Edit: the Emu Edit paper (Sheynin et al., 2023, section 5; the release has no evaluator
  code): CLIP-dir (InstructPix2Pix's `metrics/clip_similarity.py`: unit-normalised features),
  CLIP-img, CLIP-out, L1 and DINO between the input and the edit, computed with MagicBrush's
  evaluator functions and preprocessing.
- PIE-Bench: `evaluation/evaluate.py` and `evaluation/matrics_calculator.py` of
  cure-lab/PnPInversion (torchmetrics' PSNR / MSE / SSIM / LPIPS / CLIPScore; the structure
  distance of Splice's `VitExtractor`). Its run scripts save every edit as `.jpg` with PIL's
  defaults (quality 75), so the published numbers score JPEG-decoded edits (`jpeg_round_trip`).
- Ours (no benchmark reports them): the consolidated attention against the benchmark's mask
  (AUROC, IoU) and the share of pixels changed outside the mask.

Example:
    >>> import numpy as np
    >>> a = np.zeros((4, 4, 3), np.uint8); b = np.full((4, 4, 3), 51, np.uint8)
    >>> round(l1_distance(b, a), 3), round(l2_distance(b, a), 3)
    (0.2, 0.04)
    >>> decode_pie_mask([5, 2], (4, 4)).astype(int).tolist()  # border set to 1, as PIE-Bench
    [[1, 1, 1, 1], [1, 1, 1, 1], [1, 0, 0, 1], [1, 1, 1, 1]]
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from editmgt_jax.evaluation import metrics

# torchmetrics' SSIM defaults (StructuralSimilarityIndexMeasure(data_range=1.0)).
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
# Splice's attn_cosine_sim clamps the product of norms at this value.
SELF_SIM_EPS = 1e-8
# PIE-Bench's annotation masks are run-length encoded over a 512 x 512 grid.
PIE_MASK_SHAPE = (512, 512)
# PnPInversion's run scripts save edits with `Image.save("<name>.jpg")`: PIL's default quality.
PIE_JPEG_QUALITY = 75


def _unit(image: np.ndarray) -> np.ndarray:
    """uint8 -> float64 in [0, 1] (torchvision's ToTensor scale)."""
    return np.asarray(image, np.float64) / 255.0


def resize_to(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`image` resized (PIL bicubic) to the height and width of `reference`; unchanged if equal.

    MagicBrush's `eval_distance`: `gen_img.resize(gt_img.size)` (Pillow's default filter for RGB
    images is bicubic)."""
    height, width = reference.shape[:2]
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))


def l1_distance(edited: np.ndarray, reference: np.ndarray) -> float:
    """MagicBrush `eval_distance(metric='l1')`: mean |edited - reference| on [0, 1], over every
    pixel and channel, after resizing `edited` to `reference`'s size. (Emu Edit's L1: the same,
    with the input image as `reference`.)"""
    return float(np.mean(np.abs(_unit(resize_to(edited, reference)) - _unit(reference))))


def l2_distance(edited: np.ndarray, reference: np.ndarray) -> float:
    """MagicBrush `eval_distance(metric='l2')`: mean squared difference on [0, 1] (nn.MSELoss),
    after resizing `edited` to `reference`'s size."""
    return float(np.mean(np.square(_unit(resize_to(edited, reference)) - _unit(reference))))


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """1 - scipy's cosine distance of two vectors, in float64: MagicBrush's CLIP-I, DINO and
    CLIP-T (`1 - spatial.distance.cosine(...)`)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _unit_vector(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64).ravel()
    return x / np.linalg.norm(x)


def clip_direction_similarity(
    source_image: np.ndarray,
    edited_image: np.ndarray,
    source_text: np.ndarray,
    edited_text: np.ndarray,
) -> float:
    """Emu Edit's CLIP-dir, InstructPix2Pix's directional similarity (`ClipSimilarity`,
    metrics/clip_similarity.py): each CLIP feature is first divided by its L2 norm (as its
    `encode_image` / `encode_text` do), then the cosine between the change of the image
    features (edit - input) and of the text features (output caption - input caption)."""
    image_change = _unit_vector(edited_image) - _unit_vector(source_image)
    text_change = _unit_vector(edited_text) - _unit_vector(source_text)
    return cosine_similarity(image_change, text_change)


def clip_score(image_embedding: np.ndarray, text_embedding: np.ndarray) -> float:
    """torchmetrics' CLIPScore (PIE-Bench's CLIP similarity): max(100 * cos(image, text), 0)."""
    return max(100.0 * cosine_similarity(image_embedding, text_embedding), 0.0)


def decode_pie_mask(encoded: Sequence[int], shape: tuple[int, int] = PIE_MASK_SHAPE) -> np.ndarray:
    """PIE-Bench's `mask_decode`: (start, length) pairs over the row-major flattened grid set 1,
    each run clipped at the end of the array, then the outer border rows and columns set to 1
    ("to avoid annotation errors in boundary"). -> float64 [H, W] of 0 / 1."""
    encoded = [int(v) for v in encoded]
    if len(encoded) % 2:
        raise ValueError(f"A PIE-Bench mask needs (start, length) pairs; got {len(encoded)} values")
    length = shape[0] * shape[1]
    flat = np.zeros(length)
    for start, run in zip(encoded[0::2], encoded[1::2], strict=True):
        if start < 0 or run < 0:
            raise ValueError(f"Negative run ({start}, {run}) in a PIE-Bench mask")
        flat[start : start + max(0, min(run, length - start))] = 1
    mask = flat.reshape(shape)
    mask[0, :] = mask[-1, :] = 1
    mask[:, 0] = mask[:, -1] = 1
    return mask


def pie_masked(image: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    """PIE-Bench's inputs to PSNR / MSE / SSIM / LPIPS: the image on [0, 1] (float32, as
    `np.array(img).astype(np.float32) / 255`) times `keep` ([H, W], 1 = counted); the other
    pixels become 0 and still count in every mean."""
    x = np.asarray(image, np.float32) / np.float32(255)
    return x if keep is None else x * np.asarray(keep, np.float32)[..., None]


def pie_mse(source: np.ndarray, edited: np.ndarray, keep: np.ndarray | None) -> float:
    """PIE-Bench `calculate_mse` (torchmetrics MeanSquaredError): the mean over every element of
    the masked images, so zeroed pixels are in the denominator."""
    diff = pie_masked(edited, keep).astype(np.float64) - pie_masked(source, keep)
    return float(np.mean(np.square(diff)))


def pie_psnr(source: np.ndarray, edited: np.ndarray, keep: np.ndarray | None) -> float:
    """PIE-Bench `calculate_psnr` (torchmetrics PeakSignalNoiseRatio(data_range=1)):
    10 log10(1 / MSE) of the masked images (MSE as `pie_mse`); +inf where the MSE is 0 (an
    exactly kept background), as torchmetrics' log of a zero error gives. No cap."""
    mse = pie_mse(source, edited, keep)
    return math.inf if mse <= 0 else 10.0 * math.log10(1.0 / mse)


def jpeg_round_trip(image: np.ndarray, quality: int = PIE_JPEG_QUALITY) -> np.ndarray:
    """uint8 RGB [H, W, 3] after a PIL JPEG encode (at `quality`, PIL's other defaults: 4:2:0
    chroma subsampling) and decode: what PIE-Bench's evaluator reads back from the `.jpg` files
    PnPInversion's run scripts save."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


def gaussian_kernel_1d(sigma: float = SSIM_SIGMA) -> np.ndarray:
    """torchmetrics' SSIM window: size int(3.5 sigma + 0.5) * 2 + 1 (11 for 1.5), normalised."""
    size = int(3.5 * sigma + 0.5) * 2 + 1
    dist = np.arange((1 - size) / 2, (1 + size) / 2, 1.0)
    kernel = np.exp(-((dist / sigma) ** 2) / 2)
    return kernel / kernel.sum()


def _filter(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of [H + k - 1, W + k - 1, C] with kernel x kernel."""
    k = len(kernel)
    rows = sum(kernel[i] * x[i : i + x.shape[0] - k + 1] for i in range(k))
    return sum(kernel[i] * rows[:, i : i + x.shape[1] - k + 1] for i in range(k))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """torchmetrics' SSIM of two float images [H, W, C] (1.x, the version of PIE-Bench's time):
    gaussian window (sigma 1.5, 11 taps), reflect padding by 5, per-pixel SSIM with variances
    clamped at 0, the 5-pixel border dropped, mean over pixels and channels."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    kernel = gaussian_kernel_1d()
    pad = (len(kernel) - 1) // 2
    if min(a.shape[:2]) <= 2 * pad:
        raise ValueError(f"SSIM needs images larger than {2 * pad}x{2 * pad}, got {a.shape[:2]}")
    padded = lambda x: np.pad(x, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    mu_a, mu_b = _filter(padded(a), kernel), _filter(padded(b), kernel)
    var_a = np.maximum(_filter(padded(a * a), kernel) - mu_a**2, 0.0)
    var_b = np.maximum(_filter(padded(b * b), kernel) - mu_b**2, 0.0)
    cov = _filter(padded(a * b), kernel) - mu_a * mu_b
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    full = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return float(full[pad:-pad, pad:-pad].mean())


def pie_ssim(source: np.ndarray, edited: np.ndarray, keep: np.ndarray | None) -> float:
    """PIE-Bench `calculate_ssim`: `ssim` of the masked images (data range 1)."""
    return ssim(pie_masked(edited, keep), pie_masked(source, keep))


def keys_self_similarity(keys: np.ndarray, eps: float = SELF_SIM_EPS) -> np.ndarray:
    """Splice's `attn_cosine_sim` of one image's keys [T, D] (heads concatenated) -> [T, T]:
    x x^T / max(|x| |x|^T, eps)."""
    keys = np.asarray(keys, np.float64)
    norms = np.linalg.norm(keys, axis=-1, keepdims=True)
    return (keys @ keys.T) / np.maximum(norms @ norms.T, eps)


def structure_distance(source_keys: np.ndarray, edited_keys: np.ndarray) -> float:
    """PIE-Bench `calculate_structure_distance` (Splice's `calculate_global_ssim_loss` at the
    last layer): the mean squared difference of the two key self-similarity matrices. The keys
    come from DINO ViT-B/8's last block on `benchmark_preprocess.structure_pixels` inputs."""
    return float(
        np.mean(np.square(keys_self_similarity(edited_keys) - keys_self_similarity(source_keys)))
    )


# --- ours: localization against the benchmark's mask -------------------------------------------


def mask_coverage(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Fraction of each token cell of a [h, w] grid laid over the whole image that `mask`
    (bool [H, W]) covers (area average; any H, W) -> float32 [h, w]."""
    h, w = grid
    pil = Image.fromarray(np.asarray(mask, np.float32))
    return np.asarray(pil.resize((w, h), Image.Resampling.BOX), np.float32)


def attention_localization(
    heatmap: np.ndarray, mask: np.ndarray, threshold: float
) -> tuple[float, float]:
    """(AUROC, IoU) of the consolidated attention (`EditResult.heatmap`, [h, w] in [0, 1]) against
    the token cells mostly inside the benchmark's edit region (mask coverage >= 0.5; the cells
    cover the bucket, i.e. the whole image resized); IoU of `heatmap >= threshold`. AUROC is NaN
    when the region is empty or covers every cell."""
    region = mask_coverage(mask, heatmap.shape) >= 0.5
    return metrics.auroc(heatmap, region), metrics.iou(np.asarray(heatmap) >= threshold, region)


def changed_outside(
    source: np.ndarray, edited: np.ndarray, mask: np.ndarray, tolerance: float
) -> float:
    """Share of the pixels outside `mask` (bool [H, W], True = edit region) where some channel of
    `edited` differs from `source` by more than `tolerance` uint8 levels; NaN when the mask
    covers the whole image. Both images are at the source's size."""
    outside = ~np.asarray(mask, bool)
    if not outside.any():
        return float("nan")
    diff = np.abs(np.asarray(edited, np.int16) - np.asarray(source, np.int16)).max(axis=-1)
    return float((diff > tolerance)[outside].mean())
