"""Dense layers with logical partitioning and the dtype policy of the config."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from editmgt_jax.common_types import DType


def dense(
    features: int,
    axes: tuple[str, str],
    *,
    use_bias: bool,
    name: str,
    dtype: DType = jnp.float32,
    param_dtype: DType = jnp.float32,
    precision=None,
) -> nn.Dense:
    """A Dense whose kernel [in, out] carries logical axis names `axes` (bias: `axes[1]`)."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        precision=precision,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes[1],)),
        name=name,
    )
