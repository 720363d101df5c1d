"""The table between our transformer parameters and the official `Transformer2DModel` keys.

Paths are those of the unscanned layout (`transformer_blocks_{i}/...`); `scan_layout` converts
to and from the stacked layout used with `scan_layers=True`.
"""

from __future__ import annotations

from editmgt_jax.checkpoint.convert.table import (
    CONV,
    CONV1X1_AS_DENSE,
    CONV_TRANSPOSE,
    IDENTITY,
    Rule,
    layer_rules,
    norm_rules,
)
from editmgt_jax.models.transformer_config import TransformerConfig


def _double_block(i: int) -> list[Rule]:
    ours, theirs = f"transformer_blocks_{i}", f"transformer_blocks.{i}"
    rules = []
    for name in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"):
        rules += layer_rules(f"{ours}/attn/{name}", f"{theirs}.attn.{name}")
    rules += layer_rules(f"{ours}/attn/to_out", f"{theirs}.attn.to_out.0")
    for name in ("norm_q", "norm_k", "norm_added_q", "norm_added_k"):
        rules += norm_rules(f"{ours}/attn/{name}", f"{theirs}.attn.{name}", bias=False)
    for ff in ("ff", "ff_context"):
        rules += layer_rules(f"{ours}/{ff}/proj_in", f"{theirs}.{ff}.net.0.proj")
        rules += layer_rules(f"{ours}/{ff}/proj_out", f"{theirs}.{ff}.net.2")
    for norm in ("norm1", "norm1_context"):
        rules += layer_rules(f"{ours}/{norm}/linear", f"{theirs}.{norm}.linear")
    return rules


def _single_block(i: int) -> list[Rule]:
    ours, theirs = f"single_transformer_blocks_{i}", f"single_transformer_blocks.{i}"
    rules = []
    for name in ("to_q", "to_k", "to_v"):
        rules += layer_rules(f"{ours}/attn/{name}", f"{theirs}.attn.{name}")
    for name in ("norm_q", "norm_k"):
        rules += norm_rules(f"{ours}/attn/{name}", f"{theirs}.attn.{name}", bias=False)
    rules += layer_rules(f"{ours}/norm/linear", f"{theirs}.norm.linear")
    rules += layer_rules(f"{ours}/proj_mlp", f"{theirs}.proj_mlp")
    rules += layer_rules(f"{ours}/proj_out", f"{theirs}.proj_out")
    return rules


def transformer_rules(cfg: TransformerConfig) -> list[Rule]:
    """Every parameter of a transformer of this shape, in the unscanned layout."""
    rules: list[Rule] = []
    rules += layer_rules("cond_embed/linear_1", "cond_embed.linear_1", bias=False)
    rules += layer_rules("cond_embed/linear_2", "cond_embed.linear_2", bias=False)
    if cfg.connector_type == "linear":
        rules += layer_rules("connector", "connector.projector")
    rules += layer_rules("context_embedder", "context_embedder")
    rules += norm_rules("encoder_proj_layer_norm", "encoder_proj_layer_norm", bias=False)
    for embedder in ("timestep_embedder", "text_embedder"):
        for layer in ("linear_1", "linear_2"):
            name = f"time_text_embed/{embedder}/{layer}"
            rules += layer_rules(name, name.replace("/", "."))
    rules.append(Rule("embed/embeddings/embedding", "embed.embeddings.weight", IDENTITY))
    rules += norm_rules("embed/layer_norm", "embed.layer_norm", bias=False)
    rules += layer_rules("embed/conv", "embed.conv", CONV1X1_AS_DENSE, bias=False)
    if cfg.downsample:
        rules += norm_rules("down_block/norm", "down_block.downsample.norm", bias=False)
        rules += layer_rules("down_block", "down_block.downsample.conv", CONV, bias=False)
    rules += norm_rules("project_to_hidden_norm", "project_to_hidden_norm", bias=False)
    rules += layer_rules("project_to_hidden", "project_to_hidden", bias=False)
    for i in range(cfg.num_layers):
        rules += _double_block(i)
    for i in range(cfg.num_single_layers):
        rules += _single_block(i)
    rules += norm_rules("project_from_hidden_norm", "project_from_hidden_norm", bias=False)
    rules += layer_rules("project_from_hidden", "project_from_hidden", bias=False)
    if cfg.upsample:
        rules += norm_rules("up_block/norm", "up_block.upsample.norm", bias=False)
        rules += layer_rules("up_block", "up_block.upsample.conv", CONV_TRANSPOSE, bias=False)
    rules += layer_rules("mlm_layer/conv1", "mlm_layer.conv1", CONV1X1_AS_DENSE, bias=False)
    rules += norm_rules("mlm_layer/layer_norm", "mlm_layer.layer_norm", bias=False)
    rules += layer_rules("mlm_layer/conv2", "mlm_layer.conv2", CONV1X1_AS_DENSE, bias=False)
    return rules
