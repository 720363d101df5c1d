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

from editmgt_jax.common_types import Array, DType
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


def decode_edit(
    model: nn.Module, params: Any, ids: Array, source: Array, source_ids: Array
) -> Array:
    """An edit's ids decoded: the source's pixels on every cell whose id is the source's (they
    did not change), and on the others the codes, through a PatchVQ's source-guided refiner if
    it has one (`PatchVQ.refine`).

    Args:
      model, params: the tokenizer (`tokenizer_module`) and its params.
      ids, source_ids: int [B, h, w].
      source: float [B, h * stride, w * stride, 3] in [0, 1].
    Returns:
      float [B, H, W, 3] in [0, 1].
    """
    decoded = model.apply({"params": params}, ids, method=model.decode_ids)
    stride = decoded.shape[1] // ids.shape[1]
    changed = jnp.repeat(jnp.repeat(ids != source_ids, stride, axis=1), stride, axis=2)
    if isinstance(model, PatchVQ):
        return model.apply({"params": params}, decoded, source, changed, method=model.refine)
    return jnp.where(changed[..., None], decoded, source)
