"""The feed-forward layer of the transformer blocks: Linear -> GELU(tanh) -> Linear."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from editmgt_jax.common_types import ACT_BATCH, ACT_LENGTH, ACT_MLP, EMBED, MLP, Array, DType
from editmgt_jax.nn.linear import dense


class FeedForward(nn.Module):
    """[B, L, d] -> [B, L, d] through a hidden width of `hidden`."""

    hidden: int
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    precision: object = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
        h = dense(self.hidden, (EMBED, MLP), use_bias=True, name="proj_in", **kw)(x)
        h = nn.with_logical_constraint(h, (ACT_BATCH, ACT_LENGTH, ACT_MLP))
        h = nn.gelu(h, approximate=True)
        return dense(x.shape[-1], (MLP, EMBED), use_bias=True, name="proj_out", **kw)(h)
