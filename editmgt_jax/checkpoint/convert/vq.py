"""Conversion between diffusers `VQModel` folders and our `VQModel` parameters, both directions.

One table (`vq_rules(config)`) maps every parameter path of our Flax tree to its diffusers
state-dict key with a layout hook; `load_vq` and `save_vq` both walk it, so a round trip is exact.

Example (the fixture folder uses `vq_config.json` / `vq.safetensors`; released folders use
`config.json` / `diffusion_pytorch_model.safetensors`):
    >>> model, params = load_vq("../shared/fixtures/official_vq")  # doctest: +SKIP
    >>> save_vq("/tmp/vq_export", model, params)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from editmgt_jax.checkpoint.convert.safetensors_io import read_config, read_state_dict, write_folder
from editmgt_jax.checkpoint.convert.table import (
    CONV,
    CONV1X1_AS_DENSE,
    ConversionError,
    Rule,
    abstract_param_shapes,
    flatten,
    layer_rules,
    norm_rules,
    to_ours,
    to_theirs,
    unflatten,
)
from editmgt_jax.common_types import DType
from editmgt_jax.models.patch_vq import CLASS_NAME as PATCH_VQ
from editmgt_jax.models.patch_vq import PatchVQ, PatchVQConfig
from editmgt_jax.models.vq import VQConfig, VQModel

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
# Folder layouts we read: (config, weights glob), released layout first, then the fixture's.
_LAYOUTS = (("config.json", "*.safetensors"), ("vq_config.json", "vq*.safetensors"))

__all__ = ["ConversionError", "load_vq", "save_vq", "vq_rules"]


# Layer kinds of the VQ-GAN, all with biases (the shared helpers of table.py).
_conv = functools.partial(layer_rules, hook=CONV)
_conv1x1 = functools.partial(layer_rules, hook=CONV1X1_AS_DENSE)
_linear = layer_rules
_norm = norm_rules


def _resnet(ours: str, theirs: str, shortcut: bool) -> list[Rule]:
    rules = _norm(f"{ours}/norm1", f"{theirs}.norm1") + _conv(f"{ours}/conv1", f"{theirs}.conv1")
    rules += _norm(f"{ours}/norm2", f"{theirs}.norm2") + _conv(f"{ours}/conv2", f"{theirs}.conv2")
    if shortcut:
        rules += _conv1x1(f"{ours}/conv_shortcut", f"{theirs}.conv_shortcut")
    return rules


def _mid(ours: str, theirs: str, attention: bool) -> list[Rule]:
    rules = _resnet(f"{ours}/resnet_0", f"{theirs}.resnets.0", False)
    if attention:
        a, t = f"{ours}/attention", f"{theirs}.attentions.0"
        rules += _norm(f"{a}/group_norm", f"{t}.group_norm")
        for name in ("to_q", "to_k", "to_v"):
            rules += _linear(f"{a}/{name}", f"{t}.{name}")
        rules += _linear(f"{a}/to_out", f"{t}.to_out.0")
    return rules + _resnet(f"{ours}/resnet_1", f"{theirs}.resnets.1", False)


def vq_rules(config: VQConfig) -> list[Rule]:
    """The complete parameter table for `config` (our '/' path <-> diffusers key)."""
    widths = config.block_out_channels
    last = len(widths) - 1
    rules = _conv("encoder/conv_in", "encoder.conv_in")
    width_in = widths[0]
    for level, width in enumerate(widths):
        for i in range(config.layers_per_block):
            rules += _resnet(
                f"encoder/down_{level}_resnet_{i}",
                f"encoder.down_blocks.{level}.resnets.{i}",
                shortcut=(width_in if i == 0 else width) != width,
            )
        if level != last:
            rules += _conv(
                f"encoder/down_{level}_downsample",
                f"encoder.down_blocks.{level}.downsamplers.0.conv",
            )
        width_in = width
    rules += _mid("encoder/mid", "encoder.mid_block", config.mid_block_add_attention)
    rules += _norm("encoder/norm_out", "encoder.conv_norm_out")
    rules += _conv("encoder/conv_out", "encoder.conv_out")

    rules += _conv1x1("quant_conv", "quant_conv")
    rules.append(Rule("codebook/embedding", "quantize.embedding.weight"))
    rules += _conv1x1("post_quant_conv", "post_quant_conv")

    reversed_widths = widths[::-1]
    rules += _conv("decoder/conv_in", "decoder.conv_in")
    rules += _mid("decoder/mid", "decoder.mid_block", config.mid_block_add_attention)
    width_in = reversed_widths[0]
    for level, width in enumerate(reversed_widths):
        for i in range(config.layers_per_block + 1):
            rules += _resnet(
                f"decoder/up_{level}_resnet_{i}",
                f"decoder.up_blocks.{level}.resnets.{i}",
                shortcut=(width_in if i == 0 else width) != width,
            )
        if level != last:
            rules += _conv(
                f"decoder/up_{level}_upsample", f"decoder.up_blocks.{level}.upsamplers.0.conv"
            )
        width_in = width
    rules += _norm("decoder/norm_out", "decoder.conv_norm_out")
    rules += _conv("decoder/conv_out", "decoder.conv_out")
    return rules


def param_shapes(model: VQModel) -> dict[str, tuple[int, ...]]:
    """Our '/'-path -> parameter shape, without allocating (abstract init)."""
    stride = model.config.stride
    images = jax.ShapeDtypeStruct((1, stride, stride, model.config.in_channels), jnp.float32)
    return abstract_param_shapes(model, images)


def _find_layout(folder: str) -> tuple[str, str]:
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"VQ checkpoint folder {folder!r} does not exist")
    for config_name, pattern in _LAYOUTS:
        if os.path.isfile(os.path.join(folder, config_name)):
            return config_name, pattern
    raise FileNotFoundError(
        f"{folder!r} has neither config.json nor vq_config.json; expected a diffusers VQModel folder"
    )


def load_vq(
    folder: str, dtype: DType = jnp.float32, param_dtype: DType = jnp.float32
) -> tuple[VQModel, dict]:
    """Reads a diffusers `VQModel` folder (config + safetensors, numpy only), or the VQ of a
    checkpoint bundle.

    Args:
      folder: holds `config.json` + `*.safetensors` (or the fixture's `vq_config.json` +
        `vq.safetensors`), or is a bundle (bundle.json: its VQ part).
      dtype: compute dtype of the returned model.
      param_dtype: dtype of the returned parameters.
    Returns:
      (model, params): `model.apply({"params": params}, images, method=model.encode_to_ids)`.
    Raises:
      ConversionError: listing every missing, unexpected or mis-shaped tensor.
    """
    if os.path.isfile(os.path.join(folder, "bundle.json")):
        from editmgt_jax.checkpoint.bundle import load_bundle_part, read_manifest

        raw_config = read_manifest(folder)["vq"]
        params = load_bundle_part(folder, "vq")
        if raw_config.get("_class_name") == PATCH_VQ:
            model = PatchVQ(
                PatchVQConfig.from_diffusers(raw_config), dtype=dtype, param_dtype=param_dtype
            )
        else:
            model = VQModel(
                VQConfig.from_diffusers(raw_config), dtype=dtype, param_dtype=param_dtype
            )
        return model, jax.tree_util.tree_map(lambda x: jnp.asarray(x, param_dtype), params)
    config_name, pattern = _find_layout(folder)
    raw_config = read_config(folder, config_name)
    if raw_config.get("_class_name") == PATCH_VQ:
        return _load_patch_vq(folder, raw_config, pattern, dtype, param_dtype)
    config = VQConfig.from_diffusers(raw_config)
    model = VQModel(config, dtype=dtype, param_dtype=param_dtype)
    state = read_state_dict(folder, pattern)
    params = to_ours(
        vq_rules(config),
        state,
        expected_shapes=param_shapes(model),
        what=f"VQ checkpoint {folder!r}",
    )
    return model, jax.tree_util.tree_map(lambda x: jnp.asarray(x, param_dtype), params)


def _load_patch_vq(folder, config, pattern, dtype, param_dtype) -> tuple[PatchVQ, dict]:
    """A `PatchVQ` folder: config.json (`_class_name: PatchVQ`) + its `codebook` tensor."""
    model = PatchVQ(PatchVQConfig.from_diffusers(config), dtype=dtype, param_dtype=param_dtype)
    state = read_state_dict(folder, pattern)
    want = patch_vq_shapes(model)
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != want:
        raise ConversionError(
            f"PatchVQ checkpoint {folder!r} holds tensors {got}; expected exactly {want}"
        )
    return model, unflatten({k: jnp.asarray(v, param_dtype) for k, v in state.items()})


def patch_vq_shapes(model: PatchVQ) -> dict[str, tuple[int, ...]]:
    """{'codebook': shape, 'refiner/...': shape} of a PatchVQ's params (flattened as stored)."""
    cfg = model.config
    images = jax.ShapeDtypeStruct((1, cfg.stride, cfg.stride, cfg.in_channels), jnp.float32)
    return abstract_param_shapes(model, images)


def save_vq(folder: str, model: VQModel | PatchVQ, params: dict) -> None:
    """Writes `config.json` + `diffusion_pytorch_model.safetensors` in the diffusers layout (a
    `PatchVQ` stores its one `codebook` tensor the same way).

    Parameters are written in their own dtype (bfloat16 becomes float32: safetensors' numpy
    writer has no bfloat16).
    """
    if isinstance(model, PatchVQ):
        state = {k: np.asarray(v, np.float32) for k, v in flatten(jax.device_get(params)).items()}
        write_folder(folder, model.config.to_diffusers(), state, WEIGHTS_NAME)
        return
    state = to_theirs(vq_rules(model.config), params, what="VQ parameters")
    state = {
        key: value.astype(np.float32) if value.dtype == jnp.bfloat16 else value
        for key, value in state.items()
    }
    write_folder(folder, model.config.to_diffusers(), state, WEIGHTS_NAME)
