"""Metric backbones of the standard editing benchmarks, in Flax, loaded from local
transformers-layout folders: CLIP's image tower (+ its text tower for full CLIPModel folders),
DINO ViT and DINOv2. See `loading` for the contract:

    backbone = load_backbone(folder)
    backbone.embed(pixels)            # pixels float32 [B, H, W, 3], normalised -> [B, E]
    backbone.last_layer_keys(pixels)  # [B, 1 + patches, hidden]
    backbone.text.embed(texts)        # full CLIPModel folders: [B, projection_dim]
"""

from editmgt_jax.evaluation.backbones.encoder import VisionConfig, VisionOutput, VisionTransformer
from editmgt_jax.evaluation.backbones.loading import (
    Backbone,
    backbone_kind,
    init_backbone,
    load_backbone,
    save_backbone,
)

__all__ = [
    "Backbone",
    "VisionConfig",
    "VisionOutput",
    "VisionTransformer",
    "backbone_kind",
    "init_backbone",
    "load_backbone",
    "save_backbone",
]
