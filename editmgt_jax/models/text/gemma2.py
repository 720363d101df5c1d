"""Gemma 2 decoder (transformers' `Gemma2ForCausalLM`) in Flax Linen, for its hidden states.

Per layer: x += post_attn_norm(Attn(input_norm(x))); x += post_ffw_norm(MLP(pre_ffw_norm(x))).
Gemma's RMSNorm scales by (1 + w); attention uses grouped key/value heads, RoPE, the scale
query_pre_attn_scalar^-1/2, tanh soft-capping of the logits, and alternates sliding-window
(local) and full (global) causal layers; the MLP is GeGLU with tanh-GELU; embeddings are scaled
by sqrt(hidden_size); logits use the tied embedding and a final tanh soft-cap. Padding: keys where
`attention_mask` is 0 are hidden; positions are 0..T-1 whatever the padding (as transformers does
when no position ids are given).

EditMGT (`CLIP_Gemma2`) uses `hidden_states[-2]` as the text states. As in transformers,
`hidden_states` = (scaled embeddings, output of layer 0, ..., output of layer L-2, final-normed
output of layer L-1).

Example (random weights):
    >>> import jax, jax.numpy as jnp
    >>> config = Gemma2Config(vocab_size=32, hidden_size=16, intermediate_size=32,
    ...                       num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
    ...                       head_dim=8, sliding_window=4, query_pre_attn_scalar=8)
    >>> model = Gemma2(config)
    >>> ids = jnp.array([[2, 5, 9, 11, 0]]); mask = jnp.array([[1, 1, 1, 1, 0]])
    >>> params = jax.jit(model.init)(jax.random.key(0), ids, mask)["params"]
    >>> out = jax.jit(model.apply)({"params": params}, ids, mask)
    >>> len(out.hidden_states), out.hidden_states[-2].shape, out.logits.shape
    (3, (1, 5, 16), (1, 5, 32))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from editmgt_jax.common_types import (
    ACT_BATCH,
    ACT_EMBED,
    ACT_LENGTH,
    EMBED,
    HEADS,
    MLP,
    NORM,
    VOCAB,
    Array,
    DType,
)
from editmgt_jax.models.text.layers import (
    activation,
    causal_mask,
    embedding_table,
    head_split,
    key_padding_mask,
    multi_head_attention,
    rotate_half_rope,
    scaled_sqrt,
    softcap,
)
from editmgt_jax.nn.linear import dense

SLIDING = "sliding_attention"
FULL = "full_attention"


def default_layer_types(num_layers: int) -> tuple[str, ...]:
    """Gemma 2's pattern when the config does not list it: local, global, local, ..."""
    return tuple(SLIDING if i % 2 == 0 else FULL for i in range(num_layers))


@dataclasses.dataclass(frozen=True)
class Gemma2Config:
    """Structure of Gemma 2; field names follow transformers' `Gemma2Config` (defaults: 2B)."""

    vocab_size: int = 256000
    hidden_size: int = 2304
    intermediate_size: int = 9216
    num_hidden_layers: int = 26
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    head_dim: int = 256
    hidden_activation: str = "gelu_pytorch_tanh"
    max_position_embeddings: int = 8192
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    attention_bias: bool = False
    attn_logit_softcapping: float | None = 50.0
    final_logit_softcapping: float | None = 30.0
    query_pre_attn_scalar: float = 256
    sliding_window: int = 4096
    layer_types: tuple[str, ...] | None = None
    tie_word_embeddings: bool = True
    pad_token_id: int = 0
    bos_token_id: int = 2
    eos_token_id: int = 1

    def __post_init__(self):
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        activation(self.hidden_activation)
        types = self.layer_types or default_layer_types(self.num_hidden_layers)
        object.__setattr__(self, "layer_types", tuple(types))
        if len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(
                f"layer_types has {len(self.layer_types)} entries; expected "
                f"num_hidden_layers={self.num_hidden_layers}"
            )
        bad = sorted(set(self.layer_types) - {SLIDING, FULL})
        if bad:
            raise ValueError(f"Unknown layer types {bad}; expected {SLIDING!r} or {FULL!r}")

    @classmethod
    def from_transformers(cls, config: Mapping[str, Any]) -> Gemma2Config:
        """From a transformers `Gemma2Config` dict (4.x `rope_theta` or 5.x `rope_parameters`)."""
        if config.get("model_type", "gemma2") != "gemma2":
            raise ValueError(f"model_type={config['model_type']!r}; expected 'gemma2'")
        config = dict(config)
        rope = config.get("rope_parameters") or {}
        if rope.get("rope_type", "default") != "default":
            raise ValueError(f"rope_type={rope['rope_type']!r}; this port supports 'default'")
        if "rope_theta" in rope:
            config["rope_theta"] = rope["rope_theta"]
        if config.get("hidden_act") and "hidden_activation" not in config:
            config["hidden_activation"] = config["hidden_act"]
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in fields})

    def to_transformers(self) -> dict[str, Any]:
        """The config.json dict of the equivalent transformers `Gemma2ForCausalLM`."""
        out = dataclasses.asdict(self)
        out["layer_types"] = list(self.layer_types)
        return dict(out, model_type="gemma2", architectures=["Gemma2ForCausalLM"])


class Gemma2Output(NamedTuple):
    """hidden_states: L + 1 arrays [b, t, d] (see the module docstring); logits [b, t, vocab]
    float32 (None when not asked for)."""

    hidden_states: tuple[Array, ...]
    logits: Array | None


def gemma_rms_norm(x: Array, weight: Array, eps: float) -> Array:
    """x / rms(x) * (1 + weight), computed in float32 (Gemma's zero-centred gain)."""
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + eps)
    return y * (1.0 + weight.astype(jnp.float32))


class GemmaRMSNorm(nn.Module):
    """[..., d] -> [..., d] in `dtype`; parameter `scale` [d] (stored as w, applied as 1 + w)."""

    eps: float
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        weight = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.zeros_init(), (NORM,)),
            (x.shape[-1],),
            self.param_dtype,
        )
        return gemma_rms_norm(x, weight, self.eps).astype(self.dtype)


class Gemma2Layer(nn.Module):
    """One decoder layer. x [b, t, d], mask boolean [b|1, 1, t, t], positions [b, t]."""

    config: Gemma2Config
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array, mask: Array, positions: Array) -> Array:
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
        norm_kw = dict(eps=cfg.rms_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype)
        heads, kv_heads, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        bias = cfg.attention_bias

        h = GemmaRMSNorm(name="input_layernorm", **norm_kw)(x)
        q = head_split(
            dense(heads * hd, (EMBED, HEADS), use_bias=bias, name="q_proj", **kw)(h), heads
        )
        k = head_split(
            dense(kv_heads * hd, (EMBED, HEADS), use_bias=bias, name="k_proj", **kw)(h), kv_heads
        )
        v = head_split(
            dense(kv_heads * hd, (EMBED, HEADS), use_bias=bias, name="v_proj", **kw)(h), kv_heads
        )
        q = rotate_half_rope(q, positions, cfg.rope_theta)
        k = rotate_half_rope(k, positions, cfg.rope_theta)
        attn = multi_head_attention(
            q,
            k,
            v,
            mask,
            scale=cfg.query_pre_attn_scalar**-0.5,
            logit_cap=cfg.attn_logit_softcapping,
            precision=self.precision,
        )
        attn = attn.reshape(*attn.shape[:2], heads * hd)
        attn = dense(cfg.hidden_size, (HEADS, EMBED), use_bias=bias, name="o_proj", **kw)(attn)
        x = x + GemmaRMSNorm(name="post_attention_layernorm", **norm_kw)(attn)

        h = GemmaRMSNorm(name="pre_feedforward_layernorm", **norm_kw)(x)
        gate = dense(cfg.intermediate_size, (EMBED, MLP), use_bias=False, name="gate_proj", **kw)(h)
        up = dense(cfg.intermediate_size, (EMBED, MLP), use_bias=False, name="up_proj", **kw)(h)
        h = activation(cfg.hidden_activation)(gate) * up
        h = dense(cfg.hidden_size, (MLP, EMBED), use_bias=False, name="down_proj", **kw)(h)
        return x + GemmaRMSNorm(name="post_feedforward_layernorm", **norm_kw)(h)


class Gemma2(nn.Module):
    """Gemma 2: ids [batch, length] int, attention_mask [batch, length] (1: token) ->
    `Gemma2Output`.

    Parameters: `embed_tokens` [vocab, d], `layer_{i}`, `norm`, and `lm_head` (kernel [d, vocab])
    only when the embeddings are not tied. `return_logits=False` skips the vocabulary projection
    (EditMGT needs only the hidden states).
    """

    config: Gemma2Config
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(
        self, input_ids: Array, attention_mask: Array | None = None, return_logits: bool = True
    ) -> Gemma2Output:
        cfg = self.config
        b, length = input_ids.shape
        embed = embedding_table(
            self, "embed_tokens", cfg.vocab_size, cfg.hidden_size, self.param_dtype
        )
        x = embed[input_ids].astype(self.dtype)
        x = x * scaled_sqrt(cfg.hidden_size, self.dtype)
        positions = jnp.broadcast_to(jnp.arange(length), (b, length))
        padding = None if attention_mask is None else key_padding_mask(attention_mask)
        masks = {}
        for kind, window in ((FULL, None), (SLIDING, cfg.sliding_window)):
            mask = causal_mask(length, window)
            masks[kind] = mask if padding is None else mask & padding
        hidden = [x]
        for i, kind in enumerate(cfg.layer_types):
            x = nn.with_logical_constraint(x, (ACT_BATCH, ACT_LENGTH, ACT_EMBED))
            x = Gemma2Layer(cfg, self.dtype, self.param_dtype, self.precision, name=f"layer_{i}")(
                x, masks[kind], positions
            )
            hidden.append(x)
        hidden[-1] = GemmaRMSNorm(cfg.rms_norm_eps, self.dtype, self.param_dtype, name="norm")(x)
        logits = None
        if return_logits:
            if cfg.tie_word_embeddings:
                logits = jnp.einsum(
                    "btd,vd->btv",
                    hidden[-1],
                    embed.astype(self.dtype),
                    precision=self.precision,
                    preferred_element_type=jnp.float32,
                )
            else:
                logits = dense(
                    cfg.vocab_size,
                    (EMBED, VOCAB),
                    use_bias=False,
                    name="lm_head",
                    dtype=self.dtype,
                    param_dtype=self.param_dtype,
                    precision=self.precision,
                )(hidden[-1]).astype(jnp.float32)
            logits = softcap(logits, cfg.final_logit_softcapping)
        return Gemma2Output(tuple(hidden), logits)
