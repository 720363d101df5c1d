"""Conversion between a transformers CLIP text folder and our `CLIPText` params, both directions.

A released EditMGT `text_encoder/` folder (config.json + model.safetensors of a
`CLIPTextModelWithProjection`) loads with `load_clip_text`; `save_clip_text` writes it back with
every tensor bit-identical (one table, `clip_text_rules`, both ways).

Example:
    >>> model, params = load_clip_text("../shared/fixtures/text/clip_tiny")  # doctest: +SKIP
    >>> out = model.apply({"params": params}, input_ids)  # doctest: +SKIP
    >>> save_clip_text("/tmp/text_encoder", model, params)  # doctest: +SKIP
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from editmgt_jax.checkpoint.convert.safetensors_io import read_config, read_state_dict, write_folder
from editmgt_jax.checkpoint.convert.table import (
    LINEAR,
    Rule,
    abstract_param_shapes,
    layer_rules,
    norm_rules,
    to_ours,
    to_theirs,
)
from editmgt_jax.common_types import DType
from editmgt_jax.models.text.clip import CLIPText, CLIPTextConfig

WEIGHTS_NAME = "model.safetensors"
PROJECTION_KEY = "text_projection.weight"
# Older exports store the position-id buffer; it is arange(max_positions) and carries no weights.
IGNORED_KEYS = ("text_model.embeddings.position_ids",)

__all__ = ["clip_text_rules", "load_clip_text", "save_clip_text"]


def clip_text_rules(config: CLIPTextConfig) -> list[Rule]:
    """The parameter table (our '/' path <-> transformers key)."""
    rules = [
        Rule("token_embedding", "text_model.embeddings.token_embedding.weight"),
        Rule("position_embedding", "text_model.embeddings.position_embedding.weight"),
    ]
    for i in range(config.num_hidden_layers):
        ours, theirs = f"layer_{i}", f"text_model.encoder.layers.{i}"
        rules += norm_rules(f"{ours}/layer_norm1", f"{theirs}.layer_norm1")
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            rules += layer_rules(f"{ours}/{name}", f"{theirs}.self_attn.{name}")
        rules += norm_rules(f"{ours}/layer_norm2", f"{theirs}.layer_norm2")
        rules += layer_rules(f"{ours}/fc1", f"{theirs}.mlp.fc1")
        rules += layer_rules(f"{ours}/fc2", f"{theirs}.mlp.fc2")
    rules += norm_rules("final_layer_norm", "text_model.final_layer_norm")
    if config.with_projection:
        rules.append(Rule("text_projection/kernel", PROJECTION_KEY, LINEAR))
    return rules


def param_shapes(model: CLIPText) -> dict[str, tuple[int, ...]]:
    """Our '/'-path -> parameter shape, without allocating."""
    return abstract_param_shapes(model, jax.ShapeDtypeStruct((1, 2), jnp.int32))


def load_clip_text(
    folder: str, dtype: DType = jnp.float32, param_dtype: DType = jnp.float32, precision=None
) -> tuple[CLIPText, dict]:
    """Reads a CLIP text folder (config.json + *.safetensors, numpy only).

    The projection is loaded when the weights have `text_projection.weight`
    (CLIPTextModelWithProjection), else the model has none.

    Args:
      folder: the model folder.
      dtype, param_dtype: compute and parameter dtypes of the returned model.
      precision: matmul precision (a `jax.lax.Precision`; None: the platform default).
    Returns:
      (model, params) for `model.apply({"params": params}, input_ids)`.
    Raises:
      ConversionError: listing every missing, unexpected or mis-shaped tensor.
    """
    state = read_state_dict(folder)
    state = {k: v for k, v in state.items() if k not in IGNORED_KEYS}
    config = CLIPTextConfig.from_transformers(
        read_config(folder), with_projection=PROJECTION_KEY in state
    )
    model = CLIPText(config, dtype=dtype, param_dtype=param_dtype, precision=precision)
    params = to_ours(
        clip_text_rules(config),
        state,
        expected_shapes=param_shapes(model),
        what=f"CLIP text checkpoint {folder!r}",
    )
    return model, jax.tree_util.tree_map(lambda x: jnp.asarray(x, param_dtype), params)


def save_clip_text(folder: str, model: CLIPText, params: dict) -> None:
    """Writes `config.json` + `model.safetensors` in the transformers layout, each
    tensor in its parameter dtype (bfloat16 included)."""
    state = to_theirs(clip_text_rules(model.config), params, what="CLIP text parameters")
    write_folder(folder, model.config.to_transformers(), state, WEIGHTS_NAME)
