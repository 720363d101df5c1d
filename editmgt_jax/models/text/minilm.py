"""all-MiniLM-L6-v2: a 6-layer BERT encoder (width 384) with masked-mean pooling, in Flax Linen.

`Bert` is the plain post-norm BERT encoder (transformers' `BertModel` without the pooler head):
word + position + token-type embeddings, LayerNorm, then blocks of self-attention and a GELU MLP,
each followed by residual + LayerNorm. Sentence-transformers' MiniLM pools the last states by a
masked mean and L2-normalizes it; `sentence_embeddings` gives both.

Example (random weights):
    >>> import jax, jax.numpy as jnp
    >>> config = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1,
    ...                     num_attention_heads=2, intermediate_size=16, max_position_embeddings=16)
    >>> model = Bert(config)
    >>> ids = jnp.array([[1, 5, 7, 2, 0, 0]]); mask = (ids > 0).astype(jnp.int32)
    >>> params = jax.jit(model.init)(jax.random.key(0), ids, mask)["params"]
    >>> states = jax.jit(model.apply)({"params": params}, ids, mask)
    >>> states.shape
    (1, 6, 8)
    >>> pooled, normalized = sentence_embeddings(states, mask)
    >>> pooled.shape, round(float(jnp.linalg.norm(normalized)), 4)
    ((1, 8), 1.0)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from editmgt_jax.common_types import (
    ACT_BATCH,
    ACT_EMBED,
    ACT_LENGTH,
    EMBED,
    HEADS,
    MLP,
    Array,
    DType,
)
from editmgt_jax.models.text.layers import (
    LayerNorm,
    activation,
    embedding_table,
    head_split,
    key_padding_mask,
    l2_normalize,
    masked_mean,
    multi_head_attention,
)
from editmgt_jax.nn.linear import dense


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Structure of a BERT encoder; field names follow transformers' `BertConfig`.

    The defaults are all-MiniLM-L6-v2's.
    """

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        activation(self.hidden_act)

    @classmethod
    def from_transformers(cls, config: Mapping[str, Any]) -> BertConfig:
        """From a transformers `config.json` dict of a `BertModel`."""
        if config.get("model_type", "bert") != "bert":
            raise ValueError(f"model_type={config['model_type']!r}; expected 'bert'")
        kind = config.get("position_embedding_type", "absolute")
        if kind != "absolute":
            raise ValueError(f"position_embedding_type={kind!r}; this port supports 'absolute'")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in fields})

    def to_transformers(self) -> dict[str, Any]:
        """The config.json dict of the equivalent transformers `BertModel`."""
        return dict(
            dataclasses.asdict(self),
            model_type="bert",
            architectures=["BertModel"],
            position_embedding_type="absolute",
        )


def sentence_embeddings(states: Array, mask: Array) -> tuple[Array, Array]:
    """Sentence-transformers pooling: (masked mean [batch, dim], its L2-normalized copy)."""
    pooled = masked_mean(states, mask)
    return pooled, l2_normalize(pooled)


class BertLayer(nn.Module):
    """Post-norm block: x = LN(x + Attn(x)); x = LN(x + MLP(x)). [b, t, d] -> [b, t, d]."""

    config: BertConfig
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array, mask: Array) -> Array:
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
        norm_kw = dict(eps=cfg.layer_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype)
        d, heads = cfg.hidden_size, cfg.num_attention_heads

        def linear(features: int, axes: tuple[str, str], name: str) -> nn.Dense:
            return dense(features, axes, use_bias=True, name=name, **kw)

        q = head_split(linear(d, (EMBED, HEADS), "query")(x), heads)
        k = head_split(linear(d, (EMBED, HEADS), "key")(x), heads)
        v = head_split(linear(d, (EMBED, HEADS), "value")(x), heads)
        attn = multi_head_attention(q, k, v, mask, q.shape[-1] ** -0.5, precision=self.precision)
        attn = linear(d, (HEADS, EMBED), "attention_out")(attn.reshape(*attn.shape[:2], d))
        x = LayerNorm(name="attention_norm", **norm_kw)(x + attn)
        h = activation(cfg.hidden_act)(
            linear(cfg.intermediate_size, (EMBED, MLP), "intermediate")(x)
        )
        h = linear(d, (MLP, EMBED), "output")(h)
        return LayerNorm(name="output_norm", **norm_kw)(x + h)


class Bert(nn.Module):
    """BERT encoder: token ids [batch, length] int -> last hidden states [batch, length, hidden].

    `attention_mask` [batch, length] (1: token, 0: padding) hides padded keys; `token_type_ids`
    defaults to zeros. Parameters: `word_embeddings`, `position_embeddings`,
    `token_type_embeddings`, `embeddings_norm`, `layer_{i}`.
    """

    config: BertConfig
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(
        self, input_ids: Array, attention_mask: Array, token_type_ids: Array | None = None
    ) -> Array:
        cfg = self.config
        length = input_ids.shape[1]
        if length > cfg.max_position_embeddings:
            raise ValueError(
                f"Sequence length {length} exceeds max_position_embeddings="
                f"{cfg.max_position_embeddings}"
            )
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        words = embedding_table(
            self, "word_embeddings", cfg.vocab_size, cfg.hidden_size, self.param_dtype
        )
        positions = embedding_table(
            self,
            "position_embeddings",
            cfg.max_position_embeddings,
            cfg.hidden_size,
            self.param_dtype,
        )
        types = embedding_table(
            self, "token_type_embeddings", cfg.type_vocab_size, cfg.hidden_size, self.param_dtype
        )
        x = words[input_ids] + positions[None, :length] + types[token_type_ids]
        x = LayerNorm(cfg.layer_norm_eps, self.dtype, self.param_dtype, name="embeddings_norm")(
            x.astype(self.dtype)
        )
        mask = key_padding_mask(attention_mask)
        for i in range(cfg.num_hidden_layers):
            x = nn.with_logical_constraint(x, (ACT_BATCH, ACT_LENGTH, ACT_EMBED))
            x = BertLayer(cfg, self.dtype, self.param_dtype, self.precision, name=f"layer_{i}")(
                x, mask
            )
        return x
