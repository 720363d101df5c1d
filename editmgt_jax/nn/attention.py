"""Joint attention over [text; image; source] with reference injection and text->image capture.

The math lives in pure functions (`reference_bias`, `attention_with_logits`, `chunked_attention`,
`text_queries_attention`, `reduce_text_to_image`); `JointAttention` only holds the projections.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from editmgt_jax.common_types import (
    ACT_BATCH,
    ACT_HEADS,
    ACT_KV,
    ACT_LENGTH,
    EMBED,
    HEADS,
    Array,
    DType,
)
from editmgt_jax.nn.linear import dense
from editmgt_jax.nn.normalization import RMSNorm
from editmgt_jax.nn.rope import apply_rope
from editmgt_jax.nn.splash import splash_attention

Rope = tuple[Array, Array]  # (cos, sin), each [length, head_dim]
# jax.nn.dot_product_attention implementations; "splash" / "splash_interpret" go to nn.splash.
ATTENTION_IMPLS = {"xla": "xla", "cudnn": "cudnn", "auto": None}
SPLASH_IMPLS = ("splash", "splash_interpret")
DEFAULT_QUERY_CHUNK = 256  # rows; TransformerConfig.attention_chunk, see BENCHMARKS.md


def reference_bias(length: int, num_source: int, log_strength: Array) -> Array:
    """Additive bias [length, length]: log(s) between the trailing `num_source` positions and all
    others (both directions), zero elsewhere. Shared by heads and batch."""
    is_source = jnp.arange(length) >= length - num_source
    crosses = is_source[:, None] != is_source[None, :]
    return jnp.where(crosses, jnp.asarray(log_strength, jnp.float32), 0.0)


def attention_logits(q: Array, k: Array, bias: Array | None, precision=None) -> Array:
    """Scaled float32 logits [batch, heads, Lq, Lk] of q/k [batch, L, heads, head_dim], + bias."""
    logits = jnp.einsum(
        "bqhd,bkhd->bhqk", q, k, precision=precision, preferred_element_type=jnp.float32
    )
    logits = logits * q.shape[-1] ** -0.5
    return logits if bias is None else logits + bias


def attention_with_logits(
    q: Array, k: Array, v: Array, bias: Array | None, precision=None
) -> tuple[Array, Array]:
    """Softmax attention that also returns its float32 logits.

    q/k/v: [batch, length, heads, head_dim]; bias broadcastable to [batch, heads, length, length].
    Returns (out [batch, length, heads, head_dim] in v's dtype, logits [batch, heads, L, L]).
    """
    logits = attention_logits(q, k, bias, precision)
    probs = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v, precision=precision)
    return out, logits


def attention(q: Array, k: Array, v: Array, bias: Array | None, precision=None) -> Array:
    """Softmax attention with the normalization deferred to the output (same result).

    Dividing the [batch, L, heads, head_dim] output by the row sums, instead of the [batch, heads,
    L, L] probabilities, saves one pass over the largest array: the forward is memory-bound on it.
    """
    logits = attention_logits(q, k, bias, precision)
    weights = jnp.exp(logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True)))
    total = jnp.sum(weights, axis=-1)  # [batch, heads, q]
    out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v, precision=precision)
    norm = jnp.transpose(total, (0, 2, 1))[..., None]  # [batch, q, heads, 1]
    return (out.astype(jnp.float32) / norm).astype(v.dtype)


def chunked_attention(
    q: Array, k: Array, v: Array, bias: Array | None, chunk: int, precision=None
) -> Array:
    """`attention_with_logits` computed `chunk` query rows at a time (same result).

    Keeps each [batch, heads, chunk, L] block of logits cache-sized: on CPU this is about 2x faster
    than one [L, L] block at L ~ 2k, and it bounds the temporaries everywhere. bias: [L, L] or None.
    """
    length = q.shape[1]
    if chunk <= 0 or length <= chunk:
        return attention(q, k, v, bias, precision)
    outs = []
    for start in range(0, length, chunk):
        rows = slice(start, min(start + chunk, length))
        block_bias = None if bias is None else bias[rows]
        outs.append(attention(q[:, rows], k, v, block_bias, precision))
    return jnp.concatenate(outs, axis=1)


def text_queries_attention(q: Array, k: Array, text_len: int, image_len: int, precision=None):
    """The text queries' softmax over [text; image] keys (source keys and bias left out).

    q/k: [batch, L, heads, head_dim] ordered [text; image; source]. Returns
    [batch, heads, text_len, image_len] float32; only the T text rows are computed.
    """
    logits = jnp.einsum(
        "bqhd,bkhd->bhqk",
        q[:, :text_len],
        k[:, : text_len + image_len],
        precision=precision,
        preferred_element_type=jnp.float32,
    )
    probs = jax.nn.softmax(logits * q.shape[-1] ** -0.5, axis=-1)
    return probs[..., text_len:]


def reduce_text_to_image(attention: Array, text_weights: Array | None = None) -> Array:
    """[batch, heads, T, N] -> [batch, N]: mean over heads, then over text tokens.

    text_weights [batch, T] selects/weights text positions (e.g. the tokens of a query phrase);
    None averages over all T positions, as the official sampler does.
    """
    per_token = jnp.mean(attention, axis=1)  # [batch, T, N]
    if text_weights is None:
        return jnp.mean(per_token, axis=1)
    weights = text_weights.astype(jnp.float32)
    total = jnp.maximum(jnp.sum(weights, axis=-1, keepdims=True), 1e-12)
    return jnp.einsum("btn,bt->bn", per_token, weights) / total


class JointAttention(nn.Module):
    """Multi-head attention of the double-stream (`has_context=True`) or single-stream block.

    Double-stream: the image and text streams have separate q/k/v (and output) projections and
    per-head RMSNorms on q and k. Single-stream: one set, applied to the concatenated [text; image]
    sequence, and no output projection (`pre_only`). In both, the source-image stream reuses the
    image projections and joins the attention as extra queries and keys.
    """

    num_heads: int
    head_dim: int
    has_context: bool
    eps: float = 1e-6
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    precision: object = None
    # xla: chunked einsum attention | cudnn | auto: jax.nn.dot_product_attention | splash: the TPU
    # Pallas kernel (splash_interpret: the same kernel in the Pallas interpreter, for CPU tests)
    impl: str = "xla"
    chunk: int = DEFAULT_QUERY_CHUNK  # query rows per block of logits (xla impl)

    def _heads(self, x: Array) -> Array:
        x = x.reshape(*x.shape[:-1], self.num_heads, self.head_dim)
        return nn.with_logical_constraint(x, (ACT_BATCH, ACT_LENGTH, ACT_HEADS, ACT_KV))

    @nn.compact
    def __call__(
        self,
        image: Array,
        rope_image: Rope,
        *,
        text: Array | None = None,
        text_len: int = 0,
        source: Array | None = None,
        rope_source: Rope | None = None,
        log_strength: Array | float | None = 0.0,
        capture: bool = False,
    ):
        """Runs the attention.

        Args:
          image: [B, N, d] normalized image stream (single-stream: [B, T + N, d], text first).
          rope_image: tables for the N image positions.
          text: [B, T, d] normalized text stream (double-stream only).
          text_len: T (single-stream only; the length of the text prefix of `image`).
          source: [B, Ns, d] normalized source stream, or None.
          rope_source: tables for the source positions.
          log_strength: log(reference_strength), the bias between source and the rest; None when
            it is statically 0 (s = 1), which spares the bias.
          capture: also return the text->image attention [B, heads, T, N].
        Returns:
          (image_out, text_out, source_out, captured); text_out is None for single-stream.
        """
        d = self.num_heads * self.head_dim
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
        to_q = dense(d, (EMBED, HEADS), use_bias=True, name="to_q", **kw)
        to_k = dense(d, (EMBED, HEADS), use_bias=True, name="to_k", **kw)
        to_v = dense(d, (EMBED, HEADS), use_bias=True, name="to_v", **kw)
        norm_q = RMSNorm(self.eps, dtype=self.dtype, param_dtype=self.param_dtype, name="norm_q")
        norm_k = RMSNorm(self.eps, dtype=self.dtype, param_dtype=self.param_dtype, name="norm_k")

        def project(x, q_proj, k_proj, v_proj, q_norm, k_norm):
            q = q_norm(self._heads(q_proj(x)))
            k = k_norm(self._heads(k_proj(x)))
            return q, k, self._heads(v_proj(x)).astype(self.dtype)

        q, k, v = project(image, to_q, to_k, to_v, norm_q, norm_k)
        rope_len = rope_image[0].shape[0]
        # RoPE on image positions only: text ids are zeros, whose rotation is the identity.
        q = jnp.concatenate([q[:, :-rope_len], apply_rope(q[:, -rope_len:], *rope_image)], axis=1)
        k = jnp.concatenate([k[:, :-rope_len], apply_rope(k[:, -rope_len:], *rope_image)], axis=1)
        if self.has_context:
            if text is None:
                raise ValueError("double-stream attention needs the text stream")
            text_len = text.shape[1]
            add_q = dense(d, (EMBED, HEADS), use_bias=True, name="add_q_proj", **kw)
            add_k = dense(d, (EMBED, HEADS), use_bias=True, name="add_k_proj", **kw)
            add_v = dense(d, (EMBED, HEADS), use_bias=True, name="add_v_proj", **kw)
            norm_added_q = RMSNorm(
                self.eps, dtype=self.dtype, param_dtype=self.param_dtype, name="norm_added_q"
            )
            norm_added_k = RMSNorm(
                self.eps, dtype=self.dtype, param_dtype=self.param_dtype, name="norm_added_k"
            )
            tq, tk, tv = project(text, add_q, add_k, add_v, norm_added_q, norm_added_k)
            q, k, v = (jnp.concatenate(pair, axis=1) for pair in ((tq, q), (tk, k), (tv, v)))
        main_len = q.shape[1]  # T + N
        num_source = 0
        if source is not None:
            sq, sk, sv = project(source, to_q, to_k, to_v, norm_q, norm_k)
            sq, sk = apply_rope(sq, *rope_source), apply_rope(sk, *rope_source)
            q, k, v = (jnp.concatenate(pair, axis=1) for pair in ((q, sq), (k, sk), (v, sv)))
            num_source = source.shape[1]
        biased = num_source and log_strength is not None
        splash = self.impl in SPLASH_IMPLS  # the bias rides in the kernel's q/k (nn.splash)
        bias = (
            reference_bias(q.shape[1], num_source, log_strength) if biased and not splash else None
        )
        captured = None
        if capture:
            captured = text_queries_attention(q, k, text_len, main_len - text_len, self.precision)
        if splash:
            out = splash_attention(
                q,
                k,
                v,
                num_source,
                log_strength if biased else None,
                interpret=self.impl == "splash_interpret",
            )
        elif self.impl == "xla":
            out = chunked_attention(q, k, v, bias, self.chunk, precision=self.precision)
        else:
            # A fused kernel (cuDNN flash attention on GPU): same math.
            bias = None if bias is None else bias[None, None].astype(q.dtype)
            out = jax.nn.dot_product_attention(
                q, k, v.astype(q.dtype), bias=bias, implementation=ATTENTION_IMPLS[self.impl]
            )
        out = out.reshape(*out.shape[:2], d)
        main, source_out = out[:, :main_len], (out[:, main_len:] if num_source else None)
        if not self.has_context:
            return main, None, source_out, captured
        text_out, image_out = main[:, :text_len], main[:, text_len:]
        to_out = dense(d, (HEADS, EMBED), use_bias=True, name="to_out", **kw)
        to_add_out = dense(d, (HEADS, EMBED), use_bias=True, name="to_add_out", **kw)
        image_out = to_out(image_out)
        source_out = to_out(source_out) if num_source else None
        return image_out, to_add_out(text_out), source_out, captured
