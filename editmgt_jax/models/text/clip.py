"""CLIP's text transformer with its projection (transformers' `CLIPTextModelWithProjection`).

Pre-norm causal transformer: token + position embeddings, blocks of LN -> causal self-attention
-> residual and LN -> MLP (quick_gelu or gelu) -> residual, a final LayerNorm, the state at the
EOS token pooled and projected. EditMGT uses the projected pooled vector (`text_embeds`) as
`pooled_projections`, and with CLIP alone `hidden_states[-2]` as the text states.

EOS position: with the legacy `eos_token_id == 2` configs, the highest token id in the row
(CLIP's EOS is the last id of its vocabulary); otherwise the first position holding
`eos_token_id`.

Example (random weights):
    >>> import jax, jax.numpy as jnp
    >>> config = CLIPTextConfig(vocab_size=20, hidden_size=8, intermediate_size=16, projection_dim=4,
    ...                         num_hidden_layers=2, num_attention_heads=2,
    ...                         max_position_embeddings=6, bos_token_id=18, eos_token_id=19)
    >>> model = CLIPText(config)
    >>> ids = jnp.array([[18, 3, 4, 19, 0, 0]])
    >>> params = jax.jit(model.init)(jax.random.key(0), ids)["params"]
    >>> out = jax.jit(model.apply)({"params": params}, ids)
    >>> out.text_embeds.shape, out.last_hidden_state.shape, len(out.hidden_states)
    ((1, 4), (1, 6, 8), 3)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from editmgt_jax.common_types import (
    ACT_BATCH,
    ACT_EMBED,
    ACT_LENGTH,
    EMBED,
    HEADS,
    MLP,
    TEXT_EMBED,
    Array,
    DType,
)
from editmgt_jax.models.text.layers import (
    LayerNorm,
    activation,
    causal_mask,
    embedding_table,
    head_split,
    key_padding_mask,
    multi_head_attention,
)
from editmgt_jax.nn.linear import dense

# transformers keeps this legacy value to mean "pool at the highest token id".
LEGACY_EOS_TOKEN_ID = 2


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
    """Structure of the CLIP text tower; field names follow transformers' `CLIPTextConfig`.

    `with_projection`: whether the model has `text_projection` (CLIPTextModelWithProjection).
    """

    vocab_size: int = 49408
    hidden_size: int = 1024
    intermediate_size: int = 4096
    projection_dim: int = 1024
    num_hidden_layers: int = 23
    num_attention_heads: int = 16
    max_position_embeddings: int = 77
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    bos_token_id: int = 49406
    eos_token_id: int = 49407
    pad_token_id: int = 1
    with_projection: bool = True

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        activation(self.hidden_act)

    @classmethod
    def from_transformers(cls, config: Mapping[str, Any], with_projection: bool = True):
        """From a `CLIPTextConfig` dict (or a full `CLIPConfig` with a `text_config`)."""
        config = dict(config.get("text_config", config))
        kind = config.get("model_type", "clip_text_model")
        if kind not in ("clip_text_model", "clip"):
            raise ValueError(f"model_type={kind!r}; expected a CLIP text model config")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in config.items() if k in fields}
        kwargs["with_projection"] = with_projection
        return cls(**kwargs)

    def to_transformers(self) -> dict[str, Any]:
        """The config.json dict of the equivalent transformers model."""
        out = dataclasses.asdict(self)
        del out["with_projection"]
        arch = "CLIPTextModelWithProjection" if self.with_projection else "CLIPTextModel"
        return dict(out, model_type="clip_text_model", architectures=[arch])


class CLIPTextOutput(NamedTuple):
    """last_hidden_state [b, t, d] (after the final LN); pooled [b, d] (at EOS);
    text_embeds [b, projection_dim] (projected pooled; None without projection);
    hidden_states: (embeddings, output of layer 0, ..., output of the last layer), each
    [b, t, d] before the final LN."""

    last_hidden_state: Array
    pooled: Array
    text_embeds: Array | None
    hidden_states: tuple[Array, ...]


def eos_positions(input_ids: Array, eos_token_id: int | None) -> Array:
    """[batch, length] ids -> [batch] index of the EOS token (see the module docstring)."""
    if eos_token_id is None or eos_token_id == LEGACY_EOS_TOKEN_ID:
        return jnp.argmax(input_ids, axis=-1)
    return jnp.argmax((input_ids == eos_token_id).astype(jnp.int32), axis=-1)


class CLIPLayer(nn.Module):
    """x + Attn(LN(x)), then + MLP(LN(x)). [b, t, d] -> [b, t, d]."""

    config: CLIPTextConfig
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array, mask: Array) -> Array:
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
        norm_kw = dict(eps=cfg.layer_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype)
        heads, d = cfg.num_attention_heads, cfg.hidden_size
        h = LayerNorm(name="layer_norm1", **norm_kw)(x)
        q = head_split(dense(d, (EMBED, HEADS), use_bias=True, name="q_proj", **kw)(h), heads)
        k = head_split(dense(d, (EMBED, HEADS), use_bias=True, name="k_proj", **kw)(h), heads)
        v = head_split(dense(d, (EMBED, HEADS), use_bias=True, name="v_proj", **kw)(h), heads)
        attn = multi_head_attention(q, k, v, mask, q.shape[-1] ** -0.5, precision=self.precision)
        attn = attn.reshape(*attn.shape[:2], d)
        x = x + dense(d, (HEADS, EMBED), use_bias=True, name="out_proj", **kw)(attn)
        h = LayerNorm(name="layer_norm2", **norm_kw)(x)
        h = dense(cfg.intermediate_size, (EMBED, MLP), use_bias=True, name="fc1", **kw)(h)
        h = activation(cfg.hidden_act)(h)
        return x + dense(d, (MLP, EMBED), use_bias=True, name="fc2", **kw)(h)


class CLIPText(nn.Module):
    """CLIP text tower: ids [batch, length] int -> `CLIPTextOutput`.

    `attention_mask` [batch, length] (optional; EditMGT passes none) hides padded keys on top of
    the causal mask. Parameters: `token_embedding`, `position_embedding`, `layer_{i}`,
    `final_layer_norm`, `text_projection` (kernel [d, projection_dim], no bias).
    """

    config: CLIPTextConfig
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, input_ids: Array, attention_mask: Array | None = None) -> CLIPTextOutput:
        cfg = self.config
        length = input_ids.shape[1]
        if length > cfg.max_position_embeddings:
            raise ValueError(
                f"Sequence length {length} exceeds max_position_embeddings="
                f"{cfg.max_position_embeddings}"
            )
        tokens = embedding_table(
            self, "token_embedding", cfg.vocab_size, cfg.hidden_size, self.param_dtype
        )
        positions = embedding_table(
            self,
            "position_embedding",
            cfg.max_position_embeddings,
            cfg.hidden_size,
            self.param_dtype,
        )
        x = (tokens[input_ids] + positions[None, :length]).astype(self.dtype)
        mask = causal_mask(length)
        if attention_mask is not None:
            mask = mask & key_padding_mask(attention_mask)
        hidden = [x]
        for i in range(cfg.num_hidden_layers):
            x = nn.with_logical_constraint(x, (ACT_BATCH, ACT_LENGTH, ACT_EMBED))
            x = CLIPLayer(cfg, self.dtype, self.param_dtype, self.precision, name=f"layer_{i}")(
                x, mask
            )
            hidden.append(x)
        last = LayerNorm(cfg.layer_norm_eps, self.dtype, self.param_dtype, name="final_layer_norm")(
            x
        )
        eos = eos_positions(input_ids, cfg.eos_token_id)
        pooled = jnp.take_along_axis(last, eos[:, None, None], axis=1)[:, 0]
        text_embeds = None
        if cfg.with_projection:
            text_embeds = dense(
                cfg.projection_dim,
                (EMBED, TEXT_EMBED),
                use_bias=False,
                name="text_projection",
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                precision=self.precision,
            )(pooled)
        return CLIPTextOutput(last, pooled, text_embeds, tuple(hidden))
