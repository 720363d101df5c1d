"""Double-stream and single-stream transformer blocks with the source-image stream.

Both blocks share one calling convention so that they can be looped or `nn.scan`-ned alike:
`block(streams, cond) -> (streams, captured)`, where

  streams = (image [B, N, d], text [B, T, d], source [B, N, d] or None)
    (single-stream blocks receive image = [text; image] of [B, T + N, d] and text = None)
  cond = BlockConditioning (broadcast to every layer)
  captured = None, the text->image attention [B, heads, T, N], or its reduction [B, N].

The residual streams stay float32; matmuls run in the config's compute dtype.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax.numpy as jnp

from editmgt_jax.common_types import (
    ACT_BATCH,
    ACT_EMBED,
    ACT_LENGTH,
    EMBED,
    MLP,
    Array,
    to_dtype,
    to_precision,
)
from editmgt_jax.models.transformer_config import MLP_RATIO, NORM_EPS, TransformerConfig
from editmgt_jax.nn.ada_layer_norm import Modulation, modulate
from editmgt_jax.nn.attention import JointAttention, reduce_text_to_image
from editmgt_jax.nn.linear import dense
from editmgt_jax.nn.mlp import FeedForward

CAPTURE_MODES = ("none", "full", "mean")


@flax.struct.dataclass
class BlockConditioning:
    """Per-forward inputs every block sees.

    temb / source_temb: [B, d] conditioning embeddings (source: its own, from timestep 0).
    rope_image / rope_source: (cos, sin) tables [N, head_dim].
    log_strength: scalar log(reference_strength), or None when s is statically 1 (no bias).
    text_weights: [B, T] weights of text positions for reduced captures, or None (uniform).
    """

    temb: Array
    source_temb: Array | None
    rope_image: tuple[Array, Array]
    rope_source: tuple[Array, Array] | None
    log_strength: Array | None
    text_weights: Array | None


def _constrain(x: Array) -> Array:
    return nn.with_logical_constraint(x, (ACT_BATCH, ACT_LENGTH, ACT_EMBED))


def _finish_capture(captured: Array | None, mode: str, cond: BlockConditioning):
    if captured is None or mode != "mean":
        return captured
    return reduce_text_to_image(captured, cond.text_weights)


class _BlockBase(nn.Module):
    config: TransformerConfig
    capture_mode: str = "none"  # static: whether this block returns its text->image attention

    @property
    def kw(self) -> dict[str, Any]:
        return dict(
            dtype=to_dtype(self.config.dtype),
            param_dtype=to_dtype(self.config.param_dtype),
            precision=to_precision(self.config.precision),
        )

    def attention(self, name: str, has_context: bool) -> JointAttention:
        cfg = self.config
        return JointAttention(
            num_heads=cfg.num_attention_heads,
            head_dim=cfg.attention_head_dim,
            has_context=has_context,
            eps=NORM_EPS,
            impl=cfg.attention_impl,
            chunk=cfg.attention_chunk,
            name=name,
            **self.kw,
        )


class DoubleStreamBlock(_BlockBase):
    """Separate weights for image and text, joint attention; the source uses the image weights."""

    @nn.compact
    def __call__(self, streams, cond: BlockConditioning):
        image, text, source = streams
        dtype = self.kw["dtype"]
        d = self.config.inner_dim
        norm1 = Modulation(6, name="norm1", **self.kw)
        norm1_context = Modulation(6, name="norm1_context", **self.kw)
        ff = FeedForward(MLP_RATIO * d, name="ff", **self.kw)
        ff_context = FeedForward(MLP_RATIO * d, name="ff_context", **self.kw)

        i_mod = norm1(cond.temb)
        t_mod = norm1_context(cond.temb)
        s_mod = norm1(cond.source_temb) if source is not None else None
        image_out, text_out, source_out, captured = self.attention("attn", True)(
            modulate(image, i_mod[0], i_mod[1], NORM_EPS, dtype),
            cond.rope_image,
            text=modulate(text, t_mod[0], t_mod[1], NORM_EPS, dtype),
            source=None
            if source is None
            else modulate(source, s_mod[0], s_mod[1], NORM_EPS, dtype),
            rope_source=cond.rope_source,
            log_strength=cond.log_strength,
            capture=self.capture_mode != "none",
        )

        def residual(x, attn_out, mods, mlp):
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods
            del shift_msa, scale_msa
            x = x + gate_msa[:, None] * attn_out
            y = mlp(modulate(x, shift_mlp, scale_mlp, NORM_EPS, dtype))
            return _constrain(x + gate_mlp[:, None] * y)

        image = residual(image, image_out, i_mod, ff)
        text = residual(text, text_out, t_mod, ff_context)
        if source is not None:
            source = residual(source, source_out, s_mod, ff)
        return (image, text, source), _finish_capture(captured, self.capture_mode, cond)


class SingleStreamBlock(_BlockBase):
    """AdaLN-zero-single on [text; image]; attention and MLP in parallel, one output projection."""

    @nn.compact
    def __call__(self, streams, cond: BlockConditioning):
        hidden, _, source = streams
        dtype = self.kw["dtype"]
        d = self.config.inner_dim
        text_len = hidden.shape[1] - cond.rope_image[0].shape[0]
        norm = Modulation(3, name="norm", **self.kw)
        proj_mlp = dense(MLP_RATIO * d, (EMBED, MLP), use_bias=True, name="proj_mlp", **self.kw)
        proj_out = dense(d, (MLP, EMBED), use_bias=True, name="proj_out", **self.kw)

        h_mod = norm(cond.temb)
        s_mod = norm(cond.source_temb) if source is not None else None
        h_norm = modulate(hidden, h_mod[0], h_mod[1], NORM_EPS, dtype)
        s_norm = None if source is None else modulate(source, s_mod[0], s_mod[1], NORM_EPS, dtype)
        attn_out, _, source_attn, captured = self.attention("attn", False)(
            h_norm,
            cond.rope_image,
            text_len=text_len,
            source=s_norm,
            rope_source=cond.rope_source,
            log_strength=cond.log_strength,
            capture=self.capture_mode != "none",
        )

        def residual(x, x_norm, attn, mods):
            mlp = nn.gelu(proj_mlp(x_norm), approximate=True)
            out = proj_out(jnp.concatenate([attn.astype(dtype), mlp.astype(dtype)], axis=-1))
            return _constrain(x + mods[2][:, None] * out)

        hidden = residual(hidden, h_norm, attn_out, h_mod)
        if source is not None:
            source = residual(source, s_norm, source_attn, s_mod)
        return (hidden, None, source), _finish_capture(captured, self.capture_mode, cond)
