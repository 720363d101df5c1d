"""Sinusoidal embeddings and the small MLPs that embed timesteps and pooled conditions."""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from editmgt_jax.common_types import EMBED, MLP, Array, DType
from editmgt_jax.nn.linear import dense


def sinusoidal_embedding(
    values: Array,
    channels: int,
    *,
    flip_sin_to_cos: bool = True,
    downscale_freq_shift: float = 0.0,
    max_period: float = 10000.0,
) -> Array:
    """[n] scalars -> [n, channels] float32 of [cos | sin] (or [sin | cos] when not flipped)."""
    half = channels // 2
    # Frequencies are static: build them on the host, rounded once from float64, so they match
    # the reference implementation bit for bit (large timesteps amplify any ulp of difference).
    exponent = -math.log(max_period) * np.arange(half, dtype=np.float32)
    freqs = np.exp((exponent / np.float32(half - downscale_freq_shift)).astype(np.float64))
    freqs = freqs.astype(np.float32)
    angles = values.astype(jnp.float32)[:, None] * freqs[None, :]
    sin, cos = jnp.sin(angles), jnp.cos(angles)
    emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    if channels % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class TwoLayerMLP(nn.Module):
    """linear_1 -> SiLU -> linear_2: the timestep, text-projection and condition embedders.

    [batch, in] -> [batch, features].
    """

    features: int
    in_axis: str
    use_bias: bool = True
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    precision: object = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
        x = dense(
            self.features, (self.in_axis, MLP), use_bias=self.use_bias, name="linear_1", **kw
        )(x)
        x = nn.silu(x)
        return dense(self.features, (MLP, EMBED), use_bias=self.use_bias, name="linear_2", **kw)(x)
