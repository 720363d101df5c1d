"""One request's raw values (as the page or the API sends them) -> a validated edit.

The `/edit` endpoint takes, in this order (`INPUT_NAMES`): the ImageEditor value (a dict with a
`background` image file, `layers` files painted over it and a `composite`, which is ignored), the
instruction, an optional query phrase, steps, guidance, reference_strength, lambda
(`hold_threshold`), seed and paste-back. Files arrive as Gradio FileData dicts whose `path` lies in
the server's upload folder; nothing else is ever opened.

The mask: a layer pixel may change where it is visible (alpha > 0) and light (grey >= 128), so
the page's white brush strokes and a black-and-white mask PNG sent through the API both work; the
union over layers. No painted pixel at all = the whole image may change. A mask of another size
than the image is resized (nearest), with a warning.

Example:
    >>> layer = np.zeros((2, 3, 4), np.uint8); layer[0, 1] = 255
    >>> painted_pixels(layer).astype(int).tolist()
    [[0, 1, 0], [0, 0, 0]]
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from editmgt_jax.editing import images as imio
from editmgt_jax.editor import EditRequest

INPUT_NAMES = (
    "image",
    "instruction",
    "query",
    "steps",
    "guidance",
    "reference_strength",
    "hold_threshold",
    "seed",
    "paste_back",
)
MAX_SEED = 2**31 - 1
MAX_INSTRUCTION_CHARS = 1000


class InputError(ValueError):
    """A request that cannot run, with a message saying what to change."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may ask for."""

    max_pixels: int = 16_000_000  # per image or mask layer
    max_steps: int = 64  # every distinct value compiles the sampler once more
    max_layers: int = 8


@dataclasses.dataclass
class Edit:
    """A validated request: the Editor's request plus the settings that are per call in
    `Editor.run` (requests that differ in them run in separate sampler calls)."""

    request: EditRequest
    steps: int
    reference_strength: float
    paste_back: bool
    mask_box: tuple[int, int, int, int] | None  # (top, left, bottom, right) of the mask, exclusive


def painted_pixels(rgba: np.ndarray) -> np.ndarray:
    """bool [H, W]: visible (alpha > 0) and light (PIL grey >= 128) pixels of uint8 [H, W, 4]."""
    grey = np.asarray(Image.fromarray(np.ascontiguousarray(rgba[..., :3])).convert("L"))
    return (rgba[..., 3] > 0) & (grey >= imio.MASK_THRESHOLD)


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the True pixels of a non-empty bool [H, W] (exclusive ends)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def _file_path(value: Any, what: str, upload_dir: str) -> str:
    """The local path of an uploaded FileData dict; refuses anything outside the upload folder."""
    path = value.get("path") if isinstance(value, dict) else None
    if not isinstance(path, str) or not path:
        raise InputError(f"The {what} is not an uploaded file")
    real, root = os.path.realpath(path), os.path.realpath(upload_dir)
    if os.path.commonpath([real, root]) != root:
        raise InputError(f"The {what} was not uploaded to this server")
    return real


def _open_layer(path: str, what: str, max_pixels: int) -> np.ndarray:
    """uint8 [H, W, 4] of a layer file (EXIF orientation applied)."""
    try:
        image = Image.open(path)
        width, height = image.size
        if width * height > max_pixels:
            raise InputError(
                f"The {what} is {width}x{height} = {width * height} pixels, over the limit of "
                f"{max_pixels}"
            )
        image.load()
        image = ImageOps.exif_transpose(image)
        return np.asarray(image.convert("RGBA"))
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise InputError(f"The {what} is not a readable image: {e}") from e


def layers_mask(
    layers: Sequence[Any], size: tuple[int, int], upload_dir: str, limits: Limits
) -> tuple[np.ndarray | None, list[str]]:
    """(bool [H, W] mask at the image's size = (H, W), or None for no painted pixel; warnings)."""
    if len(layers) > limits.max_layers:
        raise InputError(f"The image has {len(layers)} layers; at most {limits.max_layers}")
    mask, warnings = np.zeros(size, bool), []
    for i, layer in enumerate(layers):
        what = f"mask layer {i + 1}"
        painted = painted_pixels(
            _open_layer(_file_path(layer, what, upload_dir), what, limits.max_pixels)
        )
        if painted.shape != size:
            warnings.append(
                f"The {what} is {painted.shape[1]}x{painted.shape[0]} but the image is "
                f"{size[1]}x{size[0]}; resized it (nearest)"
            )
            resized = Image.fromarray(painted).resize((size[1], size[0]), Image.Resampling.NEAREST)
            painted = np.asarray(resized, bool)
        mask |= painted
    return (mask if mask.any() else None), warnings


def _number(value: Any, name: str, default: float) -> float:
    if value is None:
        return float(default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise InputError(f"{name} must be finite, got {value}")
    return float(value)


def _integer(value: Any, name: str, default: int, low: int, high: int) -> int:
    number = _number(value, name, default)
    if number != int(number) or not low <= number <= high:
        raise InputError(f"{name} must be a whole number in [{low}, {high}], got {value}")
    return int(number)


def parse(editor, values: Sequence[Any], upload_dir: str, limits: Limits) -> Edit:
    """Validates one request (values in `INPUT_NAMES` order); raises `InputError` naming the
    problem. Unset settings (None) take the bundle's pipeline defaults."""
    if len(values) != len(INPUT_NAMES):
        raise InputError(f"Expected {len(INPUT_NAMES)} inputs {INPUT_NAMES}, got {len(values)}")
    raw = dict(zip(INPUT_NAMES, values, strict=True))
    pipeline = editor.pipeline
    image = raw["image"]
    if not isinstance(image, dict) or image.get("background") is None:
        raise InputError("No image: upload an image to edit")
    instruction = raw["instruction"]
    if not isinstance(instruction, str) or not instruction.strip():
        raise InputError("The instruction is empty: say what to change")
    if len(instruction) > MAX_INSTRUCTION_CHARS:
        raise InputError(
            f"The instruction is {len(instruction)} characters; at most {MAX_INSTRUCTION_CHARS}"
        )
    query = raw["query"]
    if query is not None and not isinstance(query, str):
        raise InputError(f"The query must be text, got {query!r}")
    query = query.strip() if query and query.strip() else None
    steps = _integer(raw["steps"], "steps", pipeline["steps"], 1, limits.max_steps)
    guidance = _number(raw["guidance"], "guidance", pipeline["guidance"])
    if guidance < 0:
        raise InputError(f"guidance must be >= 0, got {guidance}")
    strength = _number(
        raw["reference_strength"], "reference_strength", pipeline["reference_strength"]
    )
    if strength <= 0:
        raise InputError(f"reference_strength must be > 0, got {strength}")
    lam = _number(raw["hold_threshold"], "lambda (hold_threshold)", pipeline["hold_threshold"])
    if not 0.0 <= lam <= 1.0:
        raise InputError(f"lambda (hold_threshold) must be in [0, 1], got {lam}")
    seed = _integer(raw["seed"], "seed", 0, 0, MAX_SEED)
    paste_back = raw["paste_back"]
    if paste_back is None:
        paste_back = bool(pipeline["paste_back"])
    if not isinstance(paste_back, bool):
        raise InputError(f"paste_back must be true or false, got {paste_back!r}")

    background = image["background"]
    name = background.get("orig_name") if isinstance(background, dict) else None
    path = _file_path(background, "image", upload_dir)
    try:
        source, _ = imio.load_image(path, min(limits.max_pixels, editor.max_pixels))
    except imio.ImageInputError as e:
        raise InputError(str(e).replace(repr(path), repr(name or "the image"))) from e
    mask, warnings = layers_mask(image.get("layers") or [], source.shape[:2], upload_dir, limits)
    try:
        request = editor.prepare(
            source,
            instruction,
            mask=None if mask is None else mask.astype(np.uint8) * 255,
            query=query,
            seed=seed,
            guidance=guidance,
            hold_threshold=lam,
            name=name or "upload",
        )
    except ValueError as e:
        raise InputError(str(e)) from e
    request.warnings[:0] = warnings
    return Edit(
        request=request,
        steps=steps,
        reference_strength=strength,
        paste_back=paste_back,
        mask_box=None if mask is None else mask_box(mask),
    )
