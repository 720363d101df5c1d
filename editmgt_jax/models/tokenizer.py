"""Which image tokenizer a config names: the VQ-GAN (`VQModel`) or the local `PatchVQ`.

Both have `encode_to_ids(images [B,H,W,C] in [0,1]) -> [B,h,w]` and `decode_ids(ids) -> images`,
and their configs `stride`, `num_vq_embeddings` and `to_diffusers()`; a config.json dict says which
one it is by `_class_name` ("VQModel" when absent, as in diffusers' own files).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from editmgt_jax.common_types import DType
from editmgt_jax.models.patch_vq import CLASS_NAME as PATCH_VQ
from editmgt_jax.models.patch_vq import PatchVQ, PatchVQConfig
from editmgt_jax.models.vq import VQConfig, VQModel

TokenizerConfig = VQConfig | PatchVQConfig


def tokenizer_config(config: Mapping[str, Any]) -> TokenizerConfig:
    """The typed config of a tokenizer config.json dict."""
    name = config.get("_class_name", "VQModel")
    if name == PATCH_VQ:
        return PatchVQConfig.from_diffusers(config)
    if name == "VQModel":
        return VQConfig.from_diffusers(config)
    raise ValueError(f"unknown tokenizer class {name!r}; expected 'VQModel' or {PATCH_VQ!r}")


def tokenizer_module(
    config: TokenizerConfig, dtype: DType = jnp.float32, param_dtype: DType = jnp.float32
) -> nn.Module:
    """The Linen module of a typed tokenizer config."""
    if isinstance(config, PatchVQConfig):
        return PatchVQ(config, dtype=dtype, param_dtype=param_dtype)
    return VQModel(config, dtype=dtype, param_dtype=param_dtype)
