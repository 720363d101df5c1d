"""AdaLN-zero: modulations from the conditioning embedding, applied after a plain LayerNorm."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from editmgt_jax.common_types import EMBED, MODULATION, Array, DType
from editmgt_jax.nn.linear import dense
from editmgt_jax.nn.normalization import layer_normalize


def modulate(x: Array, shift: Array, scale: Array, eps: float, dtype: DType) -> Array:
    """LayerNorm(x) * (1 + scale) + shift, in float32. x [B, L, d]; shift/scale [B, d]."""
    y = layer_normalize(x, eps) * (1.0 + scale[:, None].astype(jnp.float32))
    return (y + shift[:, None].astype(jnp.float32)).astype(dtype)


class Modulation(nn.Module):
    """SiLU -> Linear(count * d), split into `count` modulations of [B, d] each.

    count = 6 (shift, scale, gate for attention; shift, scale, gate for the MLP) in double-stream
    blocks and 3 (shift, scale, gate) in single-stream blocks, in that order.
    """

    count: int
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    precision: object = None

    @nn.compact
    def __call__(self, emb: Array) -> tuple[Array, ...]:
        d = emb.shape[-1]
        out = dense(
            self.count * d,
            (EMBED, MODULATION),
            use_bias=True,
            name="linear",
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            precision=self.precision,
        )(nn.silu(emb))
        return tuple(jnp.split(out.astype(jnp.float32), self.count, axis=-1))
