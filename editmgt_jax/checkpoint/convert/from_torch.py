"""Load official PyTorch checkpoints (safetensors, no torch) into our parameter trees."""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from editmgt_jax.checkpoint.convert import safetensors_io
from editmgt_jax.checkpoint.convert.scan_layout import scan_params
from editmgt_jax.checkpoint.convert.table import abstract_param_shapes, to_ours
from editmgt_jax.checkpoint.convert.transformer_table import transformer_rules
from editmgt_jax.models.transformer import Transformer, example_inputs
from editmgt_jax.models.transformer_config import TransformerConfig

TRANSFORMER_SUBFOLDERS = ("editmgt", "transformer")


def transformer_param_shapes(cfg: TransformerConfig) -> dict[str, tuple[int, ...]]:
    """Our '/'-path -> shape for the unscanned layout, from `jax.eval_shape` (no allocation)."""
    unscanned = cfg.replace(scan_layers=False, remat_policy="none")
    model = Transformer(unscanned)
    inputs = example_inputs(unscanned, batch=1, grid=(4, 4), text_len=4)
    return abstract_param_shapes(model, *inputs.values())


def find_transformer_folder(folder: str) -> str:
    """`folder` itself, or its `editmgt/` or `transformer/` subfolder (released layouts)."""
    if os.path.isfile(os.path.join(folder, "config.json")):
        return folder
    for sub in TRANSFORMER_SUBFOLDERS:
        if os.path.isfile(os.path.join(folder, sub, "config.json")):
            return os.path.join(folder, sub)
    raise FileNotFoundError(
        f"No transformer config.json in {folder!r} or its subfolders {TRANSFORMER_SUBFOLDERS}"
    )


def read_transformer_config(folder: str, **overrides: Any) -> TransformerConfig:
    """The `TransformerConfig` of an official transformer folder (or a released folder), without
    reading its weights."""
    official = safetensors_io.read_config(find_transformer_folder(folder))
    return TransformerConfig.from_dict({**official, **overrides}, official=True)


def load_transformer(
    folder: str, *, dtype: str | None = None, **overrides: Any
) -> tuple[TransformerConfig, dict[str, Any]]:
    """Reads an official transformer folder (`config.json` + `*.safetensors`).

    Args:
      folder: the transformer folder, or a released pipeline folder holding `editmgt/` or
        `transformer/`.
      dtype: cast parameters to this dtype ('float32' or 'bfloat16'); default keeps float32.
      overrides: our execution fields (e.g. `scan_layers=True`, `dtype='bfloat16'`).
    Returns:
      (config, params) with params as numpy arrays in our layout.
    Raises:
      ConversionError: listing every missing, unexpected or mis-shaped key.
    """
    folder = find_transformer_folder(folder)
    cfg = read_transformer_config(folder, **overrides)
    state = safetensors_io.read_state_dict(folder)
    params = to_ours(
        transformer_rules(cfg),
        state,
        transformer_param_shapes(cfg),
        what=f"transformer in {folder}",
    )
    if dtype is not None:
        params = jax.tree.map(lambda x: x.astype(np.dtype(dtype)), params)
    if cfg.scan_layers:
        params = scan_params(params)
    return cfg, params
