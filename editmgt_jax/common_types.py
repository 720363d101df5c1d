"""Axis names, dtype policy and array aliases shared by every module.

Weight axes and activation axes are different name sets (as in MaxText/MaxDiffusion), so that the
sharding rules in `editmgt_jax.sharding` can place them independently.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
PRNGKey = jax.Array
DType = Any
Params = dict[str, Any]

# --- weight axes ---------------------------------------------------------------------------------
EMBED = "embed"  # the model width d (inputs of most kernels)
MLP = "mlp"  # the 4d hidden width of feed-forward layers
HEADS = "heads"  # heads x head_dim, fused, on q/k/v/out kernels
MODULATION = "modulation"  # the 3d/6d AdaLN modulation outputs
VOCAB = "vocab"  # input token vocabulary (embedding rows)
CODEBOOK = "codebook"  # output logits over VQ codes
TEXT_EMBED = "text_embed"  # width of the text encoder states
COND_EMBED = "cond_embed"  # pooled text + micro-conditioning width
TIME_EMBED = "time_embed"  # sinusoidal timestep channels
NORM = "norm"  # norm gains (small: replicated)
CONV_HEIGHT = "conv_height"
CONV_WIDTH = "conv_width"
LAYERS = "layers"  # the stacked axis of scanned layers

# --- activation axes -----------------------------------------------------------------------------
ACT_BATCH = "activation_batch"
ACT_LENGTH = "activation_length"
ACT_EMBED = "activation_embed"
ACT_HEADS = "activation_heads"
ACT_KV = "activation_kv"
ACT_MLP = "activation_mlp"
ACT_VOCAB = "activation_vocab"

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
PRECISIONS = {
    "default": jax.lax.Precision.DEFAULT,
    "high": jax.lax.Precision.HIGH,
    "highest": jax.lax.Precision.HIGHEST,
}


def to_dtype(name: str | DType) -> DType:
    """'bfloat16' -> jnp.bfloat16; dtypes pass through."""
    if isinstance(name, str):
        if name not in DTYPES:
            raise ValueError(f"Unknown dtype {name!r}; expected one of {sorted(DTYPES)}")
        return DTYPES[name]
    return name


def to_precision(name: str) -> jax.lax.Precision:
    if name not in PRECISIONS:
        raise ValueError(f"Unknown matmul precision {name!r}; expected one of {sorted(PRECISIONS)}")
    return PRECISIONS[name]
