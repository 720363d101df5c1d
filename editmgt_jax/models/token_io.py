"""The token paths into and out of the transformer (UViT-style, as in aMUSEd/Meissonic).

In:  ids [B, H, W] -> embedding -> RMSNorm -> 1x1 conv -> (RMSNorm, 2x2 stride-2 conv) -> [B, h, w, d]
Out: [B, h, w, d] -> (RMSNorm, 2x2 stride-2 transposed conv) -> 1x1 conv -> RMSNorm -> 1x1 conv
     -> logits [B, H, W, codebook]
     (+ with `source_head`, ours: a per-token MLP on the features and the source token's
      embedding, added to the features before the head;
      + with `source_copy`, ours: a per-token gate added to the source token's logit)
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from editmgt_jax.common_types import (
    ACT_BATCH,
    ACT_EMBED,
    ACT_MLP,
    ACT_VOCAB,
    CODEBOOK,
    CONV_HEIGHT,
    CONV_WIDTH,
    EMBED,
    MLP,
    VOCAB,
    Array,
    DType,
)
from editmgt_jax.nn.linear import dense
from editmgt_jax.nn.normalization import RMSNorm

PATCH = 2  # the down/upsample factor


def batch_sharded(x: Array, last: str = ACT_EMBED) -> Array:
    """[B, ..., C] split over the batch axes as the activation rules say. Without it, the
    embedding lookup's output is split like its table (over the features), and XLA keeps the
    whole batch on every chip through the token path (at 1024 px it all-gathered 8 GB of
    embeddings a step for the conv's weight gradient)."""
    return nn.with_logical_constraint(x, (ACT_BATCH,) + (None,) * (x.ndim - 2) + (last,))


def space_to_depth_conv(x: Array, kernel: Array, precision=None) -> Array:
    """2x2 stride-2 convolution without padding. x [B, H, W, C], kernel [2, 2, C, O] -> [B, H/2, W/2, O]."""
    b, h, w, c = x.shape
    patches = x.reshape(b, h // PATCH, PATCH, w // PATCH, PATCH, c)
    return jnp.einsum("bipjqc,pqco->bijo", patches, kernel.astype(x.dtype), precision=precision)


def depth_to_space_conv_transpose(x: Array, kernel: Array, precision=None) -> Array:
    """2x2 stride-2 transposed convolution (no overlap). x [B, h, w, C], kernel [2, 2, C, O] ->
    [B, 2h, 2w, O], out[2i + p, 2j + q] = x[i, j] @ kernel[p, q]."""
    b, h, w, _ = x.shape
    y = jnp.einsum("bijc,pqco->bipjqo", x, kernel.astype(x.dtype), precision=precision)
    return y.reshape(b, h * PATCH, w * PATCH, kernel.shape[-1])


class _Resample(nn.Module):
    """RMSNorm over channels, then the 2x2 stride-2 (transposed) convolution, no bias."""

    eps: float = 1e-6
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    precision: object = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = x.shape[-1]
        x = RMSNorm(self.eps, dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(x)
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(
                nn.initializers.lecun_normal(in_axis=(0, 1, 2), out_axis=3),
                (CONV_HEIGHT, CONV_WIDTH, EMBED, MLP),
            ),
            (PATCH, PATCH, c, c),
            self.param_dtype,
        )
        x = batch_sharded(x.astype(self.dtype))
        if self.transpose:
            return batch_sharded(depth_to_space_conv_transpose(x, kernel, self.precision))
        return batch_sharded(space_to_depth_conv(x, kernel, self.precision))


class Downsample(_Resample):
    """[B, H, W, C] -> [B, H/2, W/2, C]."""

    transpose = False  # class constant, not a module field


class Upsample(_Resample):
    """[B, h, w, C] -> [B, 2h, 2w, C]."""

    transpose = True


class TokenEmbed(nn.Module):
    """ids [B, H, W] -> [B, H, W, d]: embedding, RMSNorm, 1x1 conv (no bias)."""

    vocab_size: int
    features: int
    eps: float = 1e-6
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    precision: object = None

    @nn.compact
    def __call__(self, ids: Array) -> Array:
        x = nn.Embed(
            self.vocab_size,
            self.features,
            dtype=jnp.float32,
            param_dtype=self.param_dtype,
            embedding_init=nn.with_logical_partitioning(
                nn.initializers.normal(1.0), (VOCAB, EMBED)
            ),
            name="embeddings",
        )(ids)
        x = batch_sharded(x)
        x = RMSNorm(self.eps, dtype=self.dtype, param_dtype=self.param_dtype, name="layer_norm")(x)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
        return batch_sharded(
            dense(self.features, (EMBED, MLP), use_bias=False, name="conv", **kw)(x)
        )


class MlmHead(nn.Module):
    """[B, H, W, d] -> float32 logits [B, H, W, codebook]: 1x1 conv, RMSNorm, 1x1 conv (no bias)."""

    codebook_size: int
    eps: float = 1e-6
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    precision: object = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kw = dict(param_dtype=self.param_dtype, precision=self.precision)
        x = dense(x.shape[-1], (EMBED, MLP), use_bias=False, name="conv1", dtype=self.dtype, **kw)(
            x
        )
        x = batch_sharded(x)
        x = RMSNorm(self.eps, dtype=jnp.float32, param_dtype=self.param_dtype, name="layer_norm")(x)
        # Logits in float32 whatever the compute dtype: they feed softmax, sampling and the loss.
        to_logits = dense(
            self.codebook_size,
            (EMBED, CODEBOOK),
            use_bias=False,
            name="conv2",
            dtype=jnp.float32,
            **kw,
        )
        return batch_sharded(to_logits(x), ACT_VOCAB)


def add_source_logit(logits: Array, source_tokens: Array, gate: Array) -> Array:
    """`logits` with `gate` added to each position's source-token logit.

    Args:
      logits: [B, H, W, C] float.
      source_tokens: [B, H, W] int ids in [0, C).
      gate: [B, H, W] float (0 leaves the logits as they are).
    Returns:
      [B, H, W, C], the dtype of `logits`.
    """
    codes = jnp.arange(logits.shape[-1], dtype=source_tokens.dtype)
    is_source = codes == source_tokens[..., None]
    return logits + jnp.where(is_source, gate[..., None], 0.0).astype(logits.dtype)


def _zero_ended_mlp(x: Array, hidden: int, out_features: int, out_axis: str | None, kw) -> Array:
    """fc1 (gelu) then fc2 whose weights and bias start at zero: a new branch that leaves a
    warm-started model's function as it was. Called inside a compact module (its fc1 / fc2)."""
    x = nn.gelu(dense(hidden, (EMBED, MLP), use_bias=True, name="fc1", **kw)(x))
    x = batch_sharded(x, ACT_MLP)
    return nn.Dense(
        out_features,
        use_bias=True,
        kernel_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (MLP, out_axis)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (out_axis,)),
        name="fc2",
        **kw,
    )(x)


class SourceCopyGate(nn.Module):
    """[B, H, W, d] output features and [B, H, W, d] source-token embeddings -> gate [B, H, W].

    Ours, not in the official model (`TransformerConfig.source_copy`): an unchanged cell must
    reproduce its source code exactly, which the 2 x 2-pooled hidden state of a small model does
    poorly (the embedded model reproduced 87% of the target's unchanged tokens); a learned margin
    on the source code makes copying one decision per cell. The last layer starts at zero, so a
    model warm-started with the gate computes what it did without it.
    """

    hidden: int = 64
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    precision: object = None

    @nn.compact
    def __call__(self, features: Array, source_embedding: Array) -> Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
        x = jnp.concatenate([features, source_embedding], axis=-1)
        return _zero_ended_mlp(x, self.hidden, 1, None, kw)[..., 0].astype(jnp.float32)


class SourceCellHead(nn.Module):
    """[B, H, W, d] output features and [B, H, W, d] source-token embeddings -> [B, H, W, d]
    features plus a per-token correction.

    Ours, not in the official model (`TransformerConfig.source_head`): with 2 x 2 pooling a
    position's state must carry four source codes and the edit together, and the embedded model
    got only 41% of a recolour's changed tokens right even on examples it trained on (the rest of
    the image given). Here each token sees its own source code again, unpooled, beside what the
    transformer decided. The last layer starts at zero, so a model warm-started with the head
    computes what it did without it.
    """

    hidden: int
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    precision: object = None

    @nn.compact
    def __call__(self, features: Array, source_embedding: Array) -> Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
        x = jnp.concatenate([features, source_embedding.astype(features.dtype)], axis=-1)
        out = _zero_ended_mlp(x, self.hidden, features.shape[-1], EMBED, kw)
        return batch_sharded(features + out.astype(features.dtype))
