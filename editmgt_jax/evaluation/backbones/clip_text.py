"""The text half of a full CLIPModel folder, for the text-image metrics (CLIP-T, CLIP-dir,
CLIP-out, CLIPScore): our `CLIPText` tower with `text_projection`, and its tokenizer.

The tokenizer is the folder's own (`tokenizer.json`, or `vocab.json` + `merges.txt`) when it has
one, else CLIP's BPE from open-clip-torch's vocabulary (the same 49,408 ids). Texts longer than
the context (77) are truncated, as torchmetrics' CLIPScore does (OpenAI's `clip.tokenize` would
refuse them).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from editmgt_jax.checkpoint.convert.table import to_ours
from editmgt_jax.checkpoint.convert.text_clip import clip_text_rules, param_shapes
from editmgt_jax.models.text.clip import CLIPText, CLIPTextConfig
from editmgt_jax.models.text.tokenizer import (
    TextTokenizer,
    clip_tokenizer_from_open_clip,
    tokenizer_from_folder,
)

# transformers' CLIPTextConfig defaults (4.47), for fields a saved config leaves out.
TEXT_DEFAULTS = dict(
    vocab_size=49408,
    hidden_size=512,
    intermediate_size=2048,
    num_hidden_layers=12,
    num_attention_heads=8,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=1,
)
TEXT_PREFIXES = ("text_model.", "text_projection.")
IGNORED_KEYS = ("text_model.embeddings.position_ids",)
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")
TEXT_BATCH = 16


def batch_bucket(n: int, cap: int) -> int:
    """Rows per forward for n texts: `cap`, or half of it for a few (two compiled shapes)."""
    return cap // 2 if n <= cap // 2 else cap


@functools.partial(jax.jit, static_argnums=0)
def _text_embeds(model: CLIPText, params: Any, ids: jax.Array, mask: jax.Array) -> jax.Array:
    return model.apply({"params": params}, ids, mask).text_embeds


@dataclasses.dataclass
class CLIPTextTower:
    """CLIP's text tower: texts -> projected text embeddings (`get_text_features`)."""

    model: CLIPText
    params: Any
    tokenizer: TextTokenizer

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [len(texts), projection_dim]."""
        batch = self.tokenizer(list(texts))
        parts = []
        size = batch_bucket(len(batch.input_ids), TEXT_BATCH)
        for start in range(0, len(batch.input_ids), size):
            ids = batch.input_ids[start : start + size]
            mask = batch.attention_mask[start : start + size]
            pad = size - len(ids)
            if pad:
                ids = np.concatenate([ids, np.repeat(ids[:1], pad, axis=0)])
                mask = np.concatenate([mask, np.repeat(mask[:1], pad, axis=0)])
            out = _text_embeds(self.model, self.params, jnp.asarray(ids), jnp.asarray(mask))
            parts.append(np.asarray(out)[: size - pad])
        return np.concatenate(parts)


def text_config(config: Mapping[str, Any]) -> CLIPTextConfig:
    """The CLIPTextConfig of a full CLIPConfig dict (its `text_config`, transformers' defaults
    for fields left out, the top-level `projection_dim`)."""
    fields = {**TEXT_DEFAULTS, **(config.get("text_config") or {})}
    fields["projection_dim"] = config.get("projection_dim", 512)
    fields["model_type"] = "clip_text_model"
    return CLIPTextConfig.from_transformers(fields, with_projection=True)


def text_tokenizer(folder: str, max_length: int) -> TextTokenizer:
    """The folder's tokenizer if it has one, else CLIP's BPE from open-clip-torch."""
    if any(os.path.isfile(os.path.join(folder, name)) for name in TOKENIZER_FILES):
        return tokenizer_from_folder(folder, max_length)
    return clip_tokenizer_from_open_clip(max_length)


def load_clip_text_half(
    folder: str, config: Mapping[str, Any], state: Mapping[str, np.ndarray]
) -> CLIPTextTower:
    """The text tower of a full CLIPModel's weights `state` (keys `text_model.*`,
    `text_projection.weight`); raises `ConversionError` listing bad tensors."""
    cfg = text_config(config)
    model = CLIPText(cfg, precision=jax.lax.Precision.HIGHEST)
    text_state = {
        k: v for k, v in state.items() if k.startswith(TEXT_PREFIXES) and k not in IGNORED_KEYS
    }
    params = to_ours(
        clip_text_rules(cfg),
        text_state,
        expected_shapes=param_shapes(model),
        what=f"CLIP text tower of {folder!r}",
    )
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), params)
    return CLIPTextTower(model, params, text_tokenizer(folder, cfg.max_position_embeddings))
