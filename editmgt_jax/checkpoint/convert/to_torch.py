"""Write our parameter trees back in the official PyTorch layout (safetensors)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from editmgt_jax.checkpoint.convert import safetensors_io
from editmgt_jax.checkpoint.convert.scan_layout import unscan_params
from editmgt_jax.checkpoint.convert.table import to_theirs
from editmgt_jax.checkpoint.convert.transformer_table import transformer_rules
from editmgt_jax.models.transformer_config import TransformerConfig

TRANSFORMER_WEIGHTS = "diffusion_pytorch_model.safetensors"


def transformer_state_dict(cfg: TransformerConfig, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """Our params (scanned or not) -> official state dict of numpy arrays."""
    params = jax.tree.map(np.asarray, jax.device_get(params))
    if cfg.scan_layers:
        params = unscan_params(params)
    return to_theirs(transformer_rules(cfg), params, what="transformer parameters")


def save_transformer(folder: str, cfg: TransformerConfig, params: dict[str, Any]) -> None:
    """Writes `config.json` + `diffusion_pytorch_model.safetensors` as the official code reads them."""
    safetensors_io.write_folder(
        folder, cfg.to_official_dict(), transformer_state_dict(cfg, params), TRANSFORMER_WEIGHTS
    )
