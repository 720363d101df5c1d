"""Math and thin layers shared by the text encoders (BERT/MiniLM, CLIP, Gemma 2).

Pure functions hold the math: activations, attention masks, multi-head attention with optional
grouped key/value heads and logit soft-capping, RoPE, pooling. `LayerNorm` (a module) and
`embedding_table` (a parameter helper) are the only places that hold weights here; the encoders
wire them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from editmgt_jax.common_types import EMBED, NORM, VOCAB, Array, DType

# Where a mask removes a key, its logit becomes the lowest float32: a row with every key masked
# then falls back to a uniform softmax (as PyTorch's finfo.min additive masks do) instead of NaN.
MASKED_LOGIT = float(jnp.finfo(jnp.float32).min)
# sentence-transformers clamps the token count of masked-mean pooling and the norm of L2 pooling.
POOL_COUNT_EPS = 1e-9
L2_EPS = 1e-12
_QUICK_GELU_ALPHA = 1.702


def quick_gelu(x: Array) -> Array:
    """x * sigmoid(1.702 x): CLIP's original activation."""
    return x * jax.nn.sigmoid(_QUICK_GELU_ALPHA * x)


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "quick_gelu": quick_gelu,
    "relu": jax.nn.relu,
}


def activation(name: str) -> Callable[[Array], Array]:
    """The activation called `name` in a transformers config (`hidden_act`)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def softcap(x: Array, cap: float | None) -> Array:
    """cap * tanh(x / cap); identity when `cap` is None or 0."""
    if not cap:
        return x
    return cap * jnp.tanh(x / cap)


def key_padding_mask(attention_mask: Array) -> Array:
    """[batch, keys] 1/0 -> boolean [batch, 1, 1, keys] (True: the key can be attended)."""
    return (attention_mask > 0)[:, None, None, :]


def causal_mask(length: int, sliding_window: int | None = None) -> Array:
    """Boolean [1, 1, length, length]: key <= query, and key > query - window when windowed."""
    q = jnp.arange(length)[:, None]
    k = jnp.arange(length)[None, :]
    allowed = k <= q
    if sliding_window is not None:
        allowed &= k > q - sliding_window
    return allowed[None, None]


def multi_head_attention(
    q: Array,
    k: Array,
    v: Array,
    mask: Array | None,
    scale: float,
    logit_cap: float | None = None,
    precision=None,
) -> Array:
    """Softmax attention with grouped key/value heads.

    Args:
      q: [batch, length, heads, head_dim].
      k, v: [batch, keys, kv_heads, head_dim]; `heads` must be a multiple of `kv_heads` (each
        key/value head serves `heads // kv_heads` consecutive query heads).
      mask: boolean, broadcastable to [batch, heads, length, keys]; True where attention is allowed.
      scale: multiplies the q.k logits.
      logit_cap: soft-caps the scaled logits (Gemma 2) before masking; None for none.
    Returns:
      [batch, length, heads, head_dim] in v's dtype; logits and softmax are float32.
    """
    heads, kv_heads = q.shape[2], k.shape[2]
    if heads % kv_heads:
        raise ValueError(f"{heads} query heads cannot share {kv_heads} key/value heads")
    group = heads // kv_heads
    b, t, _, d = q.shape
    qg = q.reshape(b, t, kv_heads, group, d)
    logits = jnp.einsum(
        "bqhgd,bkhd->bhgqk", qg, k, precision=precision, preferred_element_type=jnp.float32
    )
    logits = softcap(logits * scale, logit_cap)
    logits = logits.reshape(b, heads, t, k.shape[1])
    if mask is not None:
        logits = jnp.where(mask, logits, MASKED_LOGIT)
    probs = jax.nn.softmax(logits, axis=-1).reshape(b, kv_heads, group, t, k.shape[1])
    out = jnp.einsum("bhgqk,bkhd->bqhgd", probs.astype(v.dtype), v, precision=precision)
    return out.reshape(b, t, heads, d)


def masked_mean(states: Array, mask: Array) -> Array:
    """Mean of `states` [batch, length, dim] over positions where `mask` [batch, length] is 1."""
    weights = mask.astype(jnp.float32)[..., None]
    total = jnp.sum(states.astype(jnp.float32) * weights, axis=1)
    return total / jnp.maximum(jnp.sum(weights, axis=1), POOL_COUNT_EPS)


def l2_normalize(x: Array, eps: float = L2_EPS) -> Array:
    """x / max(||x||, eps) over the last axis."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
    return x / jnp.maximum(norm, eps)


def head_split(x: Array, heads: int) -> Array:
    """[batch, length, heads * head_dim] -> [batch, length, heads, head_dim]."""
    return x.reshape(*x.shape[:-1], heads, x.shape[-1] // heads)


def rotate_half_rope(x: Array, positions: Array, theta: float) -> Array:
    """Rotary embedding in the 'rotate half' layout (transformers' default RoPE).

    x: [batch, length, heads, head_dim]; positions: [batch, length] int. Computed in float32.
    """
    dim = x.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [b, t, dim/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    xf = x.astype(jnp.float32)
    half = dim // 2
    rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
    return (xf * cos + rotated * sin).astype(x.dtype)


def scaled_sqrt(width: int, dtype: DType) -> Array:
    """sqrt(width) rounded to `dtype` first, as Gemma's embedding normalizer is."""
    return jnp.asarray(math.sqrt(width), dtype)


class LayerNorm(nn.Module):
    """LayerNorm with gain and bias over the last axis; statistics in float32.

    [..., features] -> [..., features] in `dtype`. Parameters: `scale`, `bias` [features].
    """

    eps: float
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        features = x.shape[-1]
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.ones_init(), (NORM,)),
            (features,),
            self.param_dtype,
        )
        bias = self.param(
            "bias",
            nn.with_logical_partitioning(nn.initializers.zeros_init(), (NORM,)),
            (features,),
            self.param_dtype,
        )
        xf = x.astype(jnp.float32)
        mean = jnp.mean(xf, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
        y = (xf - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(self.dtype)


def embedding_table(
    module: nn.Module, name: str, rows: int, width: int, param_dtype: DType, axes=(VOCAB, EMBED)
) -> Array:
    """A [rows, width] table parameter `name` on `module` (N(0, 1) init, logical `axes`)."""
    return module.param(
        name,
        nn.with_logical_partitioning(nn.initializers.normal(1.0), axes),
        (rows, width),
        param_dtype,
    )
