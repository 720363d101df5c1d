"""Conversion between a transformers Gemma 2 folder and our `Gemma2` params, both directions.

Reads `Gemma2ForCausalLM` folders (keys under `model.`; `lm_head.weight` only when untied) and
bare `Gemma2Model` folders (no prefix). `save_gemma2` writes the `Gemma2ForCausalLM` layout, so
a released `llm_encoder/` folder round-trips bit-exactly.

Example:
    >>> model, params = load_gemma2("../shared/fixtures/text/gemma2_tiny")  # doctest: +SKIP
    >>> out = model.apply({"params": params}, input_ids, attention_mask)  # doctest: +SKIP
    >>> text_states = out.hidden_states[-2]  # doctest: +SKIP
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from editmgt_jax.checkpoint.convert.safetensors_io import read_config, read_state_dict, write_folder
from editmgt_jax.checkpoint.convert.table import (
    LINEAR,
    Rule,
    abstract_param_shapes,
    to_ours,
    to_theirs,
)
from editmgt_jax.common_types import DType
from editmgt_jax.models.text.gemma2 import Gemma2, Gemma2Config

WEIGHTS_NAME = "model.safetensors"
CAUSAL_LM_PREFIX = "model."
_NORMS = (
    "input_layernorm",
    "post_attention_layernorm",
    "pre_feedforward_layernorm",
    "post_feedforward_layernorm",
)

__all__ = ["gemma2_rules", "load_gemma2", "save_gemma2"]


def gemma2_rules(config: Gemma2Config, prefix: str = CAUSAL_LM_PREFIX) -> list[Rule]:
    """The parameter table (our '/' path <-> transformers key, `prefix` before decoder keys)."""
    p = prefix
    rules = [Rule("embed_tokens", f"{p}embed_tokens.weight")]
    for i in range(config.num_hidden_layers):
        ours, theirs = f"layer_{i}", f"{p}layers.{i}"
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            rules.append(Rule(f"{ours}/{name}/kernel", f"{theirs}.self_attn.{name}.weight", LINEAR))
            if config.attention_bias:
                rules.append(Rule(f"{ours}/{name}/bias", f"{theirs}.self_attn.{name}.bias"))
        for name in ("gate_proj", "up_proj", "down_proj"):
            rules.append(Rule(f"{ours}/{name}/kernel", f"{theirs}.mlp.{name}.weight", LINEAR))
        for name in _NORMS:
            rules.append(Rule(f"{ours}/{name}/scale", f"{theirs}.{name}.weight"))
    rules.append(Rule("norm/scale", f"{p}norm.weight"))
    if not config.tie_word_embeddings:
        rules.append(Rule("lm_head/kernel", "lm_head.weight", LINEAR))
    return rules


def param_shapes(model: Gemma2) -> dict[str, tuple[int, ...]]:
    """Our '/'-path -> parameter shape, without allocating."""
    ids = jax.ShapeDtypeStruct((1, 2), jnp.int32)
    return abstract_param_shapes(model, ids, ids)


def load_gemma2(
    folder: str, dtype: DType = jnp.float32, param_dtype: DType = jnp.float32, precision=None
) -> tuple[Gemma2, dict]:
    """Reads a Gemma 2 folder (config.json + *.safetensors, sharded or not; numpy only).

    Args:
      folder: the model folder.
      dtype, param_dtype: compute and parameter dtypes of the returned model.
      precision: matmul precision (a `jax.lax.Precision`; None: the platform default).
    Returns:
      (model, params) for `model.apply({"params": params}, input_ids, attention_mask)`.
    Raises:
      ConversionError: listing every missing, unexpected or mis-shaped tensor.
    """
    config = Gemma2Config.from_transformers(read_config(folder))
    model = Gemma2(config, dtype=dtype, param_dtype=param_dtype, precision=precision)
    state = read_state_dict(folder)
    prefix = CAUSAL_LM_PREFIX if any(k.startswith(CAUSAL_LM_PREFIX) for k in state) else ""
    if config.tie_word_embeddings:
        # Some exports store the tied head anyway; it must equal the embedding it shares.
        head = state.pop("lm_head.weight", None)
        embed = state.get(f"{prefix}embed_tokens.weight")
        if head is not None and embed is not None and not np.array_equal(head, embed):
            raise ValueError(
                f"{folder!r}: tie_word_embeddings is true but lm_head.weight differs from "
                "embed_tokens.weight"
            )
    params = to_ours(
        gemma2_rules(config, prefix),
        state,
        expected_shapes=param_shapes(model),
        what=f"Gemma 2 checkpoint {folder!r}",
    )
    return model, jax.tree_util.tree_map(lambda x: jnp.asarray(x, param_dtype), params)


def save_gemma2(folder: str, model: Gemma2, params: dict) -> None:
    """Writes `config.json` + `model.safetensors` in the `Gemma2ForCausalLM` layout,
    each tensor in its parameter dtype (bfloat16 included)."""
    state = to_theirs(gemma2_rules(model.config), params, what="Gemma 2 parameters")
    write_folder(folder, model.config.to_transformers(), state, WEIGHTS_NAME)
