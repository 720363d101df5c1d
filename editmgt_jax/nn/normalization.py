"""RMSNorm and the parameter-free LayerNorm used by AdaLN, computed in float32."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from editmgt_jax.common_types import NORM, Array, DType


def rms_normalize(x: Array, eps: float) -> Array:
    """x / sqrt(mean(x^2) + eps) over the last axis, in float32."""
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)


def layer_normalize(x: Array, eps: float) -> Array:
    """(x - mean) / sqrt(var + eps) over the last axis, in float32, without affine parameters."""
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


class RMSNorm(nn.Module):
    """RMSNorm with a learned gain, over the last axis: [..., features] -> [..., features].

    Statistics and the gain multiply are float32; the result is cast to `dtype`.
    """

    eps: float = 1e-6
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.ones_init(), (NORM,)),
            (x.shape[-1],),
            self.param_dtype,
        )
        return (rms_normalize(x, self.eps) * scale.astype(jnp.float32)).astype(self.dtype)
