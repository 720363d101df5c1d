"""DINOv2 in transformers' layout (`Dinov2Model`: facebook/dinov2-small ... -giant).

The embedding is `pooler_output`: the class token after the final LayerNorm. DINOv2 always
interpolates its position embeddings to the input's patch grid. Layer scale (`layerscale_value`),
`mlp_ratio` and the SwiGLU feed-forward of the giant model (`use_swiglu_ffn`) are read from the
config; the mask token (used only for masked-image pre-training) is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from editmgt_jax.checkpoint.convert.table import CONV, Rule, layer_rules, norm_rules
from editmgt_jax.evaluation.backbones.encoder import VisionConfig, swiglu_hidden_size
from editmgt_jax.evaluation.backbones.layout import CLASS_TOKEN, POSITIONS

MODEL_TYPES = ("dinov2",)
PREFIX = "dinov2."
# transformers' Dinov2Config defaults (4.47), for fields a saved config leaves out.
DEFAULTS = dict(
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    mlp_ratio=4,
    hidden_act="gelu",
    layer_norm_eps=1e-6,
    image_size=224,
    patch_size=14,
    num_channels=3,
    qkv_bias=True,
    layerscale_value=1.0,
    use_swiglu_ffn=False,
)
IGNORED_PREFIXES = ("embeddings.mask_token", "classifier.")


def vision_config(config: Mapping[str, Any]) -> VisionConfig:
    fields = {**DEFAULTS, **config}
    hidden, ratio = int(fields["hidden_size"]), float(fields["mlp_ratio"])
    swiglu = bool(fields["use_swiglu_ffn"])
    return VisionConfig(
        hidden_size=hidden,
        num_hidden_layers=int(fields["num_hidden_layers"]),
        num_attention_heads=int(fields["num_attention_heads"]),
        intermediate_size=swiglu_hidden_size(hidden, ratio) if swiglu else int(hidden * ratio),
        hidden_act=str(fields["hidden_act"]),
        layer_norm_eps=float(fields["layer_norm_eps"]),
        image_size=int(fields["image_size"]),
        patch_size=int(fields["patch_size"]),
        num_channels=int(fields["num_channels"]),
        qkv_bias=bool(fields["qkv_bias"]),
        patch_bias=True,
        layerscale_value=float(fields["layerscale_value"]),
        use_swiglu_ffn=swiglu,
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
        out += norm_rules(f"{ours}/norm1", f"{theirs}.norm1")
        for name in ("query", "key", "value"):
            out += layer_rules(
                f"{ours}/{name}", f"{theirs}.attention.attention.{name}", bias=config.qkv_bias
            )
        out += layer_rules(f"{ours}/out", f"{theirs}.attention.output.dense")
        out.append(Rule(f"{ours}/layer_scale1", f"{theirs}.layer_scale1.lambda1"))
        out += norm_rules(f"{ours}/norm2", f"{theirs}.norm2")
        if config.use_swiglu_ffn:
            out += layer_rules(f"{ours}/swiglu_in", f"{theirs}.mlp.weights_in")
            out += layer_rules(f"{ours}/swiglu_out", f"{theirs}.mlp.weights_out")
        else:
            out += layer_rules(f"{ours}/fc1", f"{theirs}.mlp.fc1")
            out += layer_rules(f"{ours}/fc2", f"{theirs}.mlp.fc2")
        out.append(Rule(f"{ours}/layer_scale2", f"{theirs}.layer_scale2.lambda1"))
    out += norm_rules("final_norm", "layernorm")
    return out
