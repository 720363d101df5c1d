"""DINO's ViT in transformers' layout (`ViTModel`; the layout of facebook/dino-vits16, dino-vitb8).

The DINO feature MagicBrush and Emu Edit compare is the class token of `last_hidden_state` (after
the final LayerNorm), what DINO's own `VisionTransformer.forward` returns. PIE-Bench's structure
distance uses the last block's key projection (`last_layer_keys`). A pooler (ViTModel's default
`add_pooling_layer`) is not used by any metric and is ignored when present; so is a classifier
head, and the `vit.` prefix of ViTForImageClassification.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from editmgt_jax.checkpoint.convert.table import CONV, Rule, layer_rules, norm_rules
from editmgt_jax.evaluation.backbones.encoder import VisionConfig
from editmgt_jax.evaluation.backbones.layout import CLASS_TOKEN, POSITIONS

MODEL_TYPES = ("vit",)
PREFIX = "vit."
# transformers' ViTConfig defaults (4.47), for fields a saved config leaves out.
DEFAULTS = dict(
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    hidden_act="gelu",
    layer_norm_eps=1e-12,
    image_size=224,
    patch_size=16,
    num_channels=3,
    qkv_bias=True,
)
IGNORED_PREFIXES = ("pooler.", "classifier.", "embeddings.mask_token")


def vision_config(config: Mapping[str, Any]) -> VisionConfig:
    fields = {**DEFAULTS, **config}
    return VisionConfig(
        hidden_size=int(fields["hidden_size"]),
        num_hidden_layers=int(fields["num_hidden_layers"]),
        num_attention_heads=int(fields["num_attention_heads"]),
        intermediate_size=int(fields["intermediate_size"]),
        hidden_act=str(fields["hidden_act"]),
        layer_norm_eps=float(fields["layer_norm_eps"]),
        image_size=int(fields["image_size"]),
        patch_size=int(fields["patch_size"]),
        num_channels=int(fields["num_channels"]),
        qkv_bias=bool(fields["qkv_bias"]),
        patch_bias=True,
        final_norm="all",
    )


def is_ignored(key: str) -> bool:
    return key.startswith(IGNORED_PREFIXES)


def rules(config: VisionConfig) -> list[Rule]:
    """Our '/' paths <-> transformers keys."""
    out = [
        Rule("class_embedding", "embeddings.cls_token", CLASS_TOKEN),
        Rule("position_embedding", "embeddings.position_embeddings", POSITIONS),
    ]
    out += layer_rules("patch_embedding", "embeddings.patch_embeddings.projection", CONV)
    for i in range(config.num_hidden_layers):
        ours, theirs = f"layer_{i}", f"encoder.layer.{i}"
        out += norm_rules(f"{ours}/norm1", f"{theirs}.layernorm_before")
        for name in ("query", "key", "value"):
            out += layer_rules(
                f"{ours}/{name}", f"{theirs}.attention.attention.{name}", bias=config.qkv_bias
            )
        out += layer_rules(f"{ours}/out", f"{theirs}.attention.output.dense")
        out += norm_rules(f"{ours}/norm2", f"{theirs}.layernorm_after")
        out += layer_rules(f"{ours}/fc1", f"{theirs}.intermediate.dense")
        out += layer_rules(f"{ours}/fc2", f"{theirs}.output.dense")
    out += norm_rules("final_norm", "layernorm")
    return out
