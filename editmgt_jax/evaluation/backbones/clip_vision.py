"""CLIP's image tower in transformers' layout: `CLIPVisionModelWithProjection`, or the vision half
of a full `CLIPModel` folder (openai/clip-vit-base-patch32, clip-vit-large-patch14, ...).

What the benchmarks compare is `image_embeds`: the post-LayerNorm class token through the visual
projection (`visual_projection.weight`, no bias), i.e. OpenAI CLIP's `encode_image`. A full
CLIPModel keeps its vision fields under `vision_config` (fields left out take
`CLIPVisionConfig`'s defaults) and the projection width at the top level.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from editmgt_jax.checkpoint.convert.table import CONV, LINEAR, Rule, layer_rules, norm_rules
from editmgt_jax.evaluation.backbones.encoder import VisionConfig

MODEL_TYPES = ("clip_vision_model", "clip")
# transformers' CLIPVisionConfig defaults (4.47), for fields a saved config leaves out.
DEFAULTS = dict(
    hidden_size=768,
    intermediate_size=3072,
    projection_dim=512,
    num_hidden_layers=12,
    num_attention_heads=12,
    num_channels=3,
    image_size=224,
    patch_size=32,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
)
# A full CLIPModel also holds the text tower and the logit scale; older exports the id buffers.
IGNORED_PREFIXES = ("text_model.", "text_projection.", "logit_scale")
IGNORED_KEYS = ("vision_model.embeddings.position_ids",)
PROJECTION_KEY = "visual_projection.weight"


def is_full_clip(config: Mapping[str, Any]) -> bool:
    """True for a full CLIPModel config (text + vision)."""
    return config.get("model_type") == "clip"


def vision_config(config: Mapping[str, Any], has_projection: bool = True) -> VisionConfig:
    """VisionConfig of a CLIPVisionConfig dict or of a full CLIPConfig's `vision_config`."""
    fields = dict(DEFAULTS)
    if is_full_clip(config):
        fields.update(config.get("vision_config") or {})
        fields["projection_dim"] = config.get("projection_dim", 512)
    else:
        fields.update(config)
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
        qkv_bias=True,
        patch_bias=False,
        pre_layernorm=True,
        final_norm="cls",
        projection_dim=int(fields["projection_dim"]) if has_projection else None,
    )


def is_ignored(key: str) -> bool:
    return key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES)


def rules(config: VisionConfig) -> list[Rule]:
    """Our '/' paths <-> transformers keys."""
    out = [
        Rule("class_embedding", "vision_model.embeddings.class_embedding"),
        Rule("patch_embedding/kernel", "vision_model.embeddings.patch_embedding.weight", CONV),
        Rule("position_embedding", "vision_model.embeddings.position_embedding.weight"),
    ]
    out += norm_rules("pre_norm", "vision_model.pre_layrnorm")  # sic: transformers' name
    for i in range(config.num_hidden_layers):
        ours, theirs = f"layer_{i}", f"vision_model.encoder.layers.{i}"
        out += norm_rules(f"{ours}/norm1", f"{theirs}.layer_norm1")
        for name, key in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
            out += layer_rules(f"{ours}/{name}", f"{theirs}.self_attn.{key}")
        out += layer_rules(f"{ours}/out", f"{theirs}.self_attn.out_proj")
        out += norm_rules(f"{ours}/norm2", f"{theirs}.layer_norm2")
        out += layer_rules(f"{ours}/fc1", f"{theirs}.mlp.fc1")
        out += layer_rules(f"{ours}/fc2", f"{theirs}.mlp.fc2")
    out += norm_rules("final_norm", "vision_model.post_layernorm")
    if config.projection_dim is not None:
        out.append(Rule("projection/kernel", PROJECTION_KEY, LINEAR))
    return out
