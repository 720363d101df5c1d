"""Text encoders: MiniLM (the embedded default), CLIP and Gemma 2 (the official EditMGT path).

Frozen encoders for the rest of the project (`encode(texts) -> EncodedText(states, pooled, mask)`):
`minilm_encoder()`, `clip_gemma2_encoder(folder)`. Modules and loaders, for conversion and
tests: `Bert` / `load_minilm`, `CLIPText` / `load_clip_text` / `save_clip_text`, `Gemma2` /
`load_gemma2` / `save_gemma2`. Tokenizers: `TextTokenizer`, `tokenizer_from_folder`,
`clip_tokenizer_from_open_clip`, `minilm_tokenizer`.

The loaders live with the other conversion tables in `editmgt_jax.checkpoint.convert.text_*`,
which import the modules of this package; they are re-exported lazily so that either side can be
imported first.
"""

import importlib

from editmgt_jax.models.text.clip import CLIPText, CLIPTextConfig, CLIPTextOutput
from editmgt_jax.models.text.encoder import (
    CLIPGemma2Encoder,
    EncodedText,
    MiniLMEncoder,
    TextEncoder,
    clip_gemma2_encoder,
    minilm_encoder,
    minilm_tokenizer,
)
from editmgt_jax.models.text.gemma2 import Gemma2, Gemma2Config, Gemma2Output
from editmgt_jax.models.text.minilm import Bert, BertConfig, sentence_embeddings
from editmgt_jax.models.text.tokenizer import (
    TextTokenizer,
    TokenBatch,
    clip_tokenizer_from_open_clip,
    tokenizer_from_folder,
)

_LOADERS = {
    "load_clip_text": "editmgt_jax.checkpoint.convert.text_clip",
    "save_clip_text": "editmgt_jax.checkpoint.convert.text_clip",
    "load_gemma2": "editmgt_jax.checkpoint.convert.text_gemma2",
    "save_gemma2": "editmgt_jax.checkpoint.convert.text_gemma2",
    "load_minilm": "editmgt_jax.checkpoint.convert.text_minilm",
    "minilm_folder": "editmgt_jax.checkpoint.convert.text_minilm",
    "save_bert": "editmgt_jax.checkpoint.convert.text_minilm",
}


def __getattr__(name: str):
    if name in _LOADERS:
        return getattr(importlib.import_module(_LOADERS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Bert",
    "BertConfig",
    "CLIPGemma2Encoder",
    "CLIPText",
    "CLIPTextConfig",
    "CLIPTextOutput",
    "EncodedText",
    "Gemma2",
    "Gemma2Config",
    "Gemma2Output",
    "MiniLMEncoder",
    "TextEncoder",
    "TextTokenizer",
    "TokenBatch",
    "clip_gemma2_encoder",
    "clip_tokenizer_from_open_clip",
    "load_clip_text",
    "load_gemma2",
    "load_minilm",
    "minilm_encoder",
    "minilm_folder",
    "minilm_tokenizer",
    "save_bert",
    "save_clip_text",
    "save_gemma2",
    "sentence_embeddings",
    "tokenizer_from_folder",
]
