"""Text encoders: MiniLM (the embedded default), CLIP and Gemma 2 (the official EditMGT path).

Frozen encoders for the rest of the project (`encode(texts) -> EncodedText(states, pooled, mask)`):
`MiniLMEncoder`, `CLIPGemma2Encoder`. Modules: `Bert`, `CLIPText`, `Gemma2`. Tokenizers:
`TextTokenizer`, `tokenizer_from_folder`, `clip_tokenizer_from_open_clip`.

Loading them from stored weights (`minilm_encoder()`, `clip_gemma2_encoder(folder)`,
`load_minilm`, `load_clip_text`, `load_gemma2`, ...) is `editmgt_jax.checkpoint`'s job; this
package imports nothing from it.
"""

from editmgt_jax.models.text.clip import CLIPText, CLIPTextConfig, CLIPTextOutput
from editmgt_jax.models.text.encoder import (
    CLIPGemma2Encoder,
    EncodedText,
    MiniLMEncoder,
    TextEncoder,
)
from editmgt_jax.models.text.gemma2 import Gemma2, Gemma2Config, Gemma2Output
from editmgt_jax.models.text.minilm import Bert, BertConfig, sentence_embeddings
from editmgt_jax.models.text.tokenizer import (
    TextTokenizer,
    TokenBatch,
    clip_tokenizer_from_open_clip,
    tokenizer_from_folder,
)

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
    "clip_tokenizer_from_open_clip",
    "sentence_embeddings",
    "tokenizer_from_folder",
]
