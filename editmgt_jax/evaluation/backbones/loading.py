"""Loading metric backbones from local transformers-layout folders (`config.json` +
`*.safetensors`), numpy only, and writing them back.

`load_backbone(folder)` picks the architecture from `config.json`'s `model_type`:
`clip` (a full CLIPModel: vision half + `visual_projection`, and the text half for CLIP-T),
`clip_vision_model` (CLIPVisionModelWithProjection), `vit` (DINO ViT) or `dinov2`. Every
missing, unexpected or mis-shaped tensor is listed in one `ConversionError`; PyTorch pickles
(`pytorch_model.bin`) are refused with the way to convert them, since torch is never imported.

Example:
    >>> backbone = load_backbone("../shared/fixtures/vision/dino_vit_tiny")  # doctest: +SKIP
    >>> backbone.embed(pixels).shape  # pixels [B, H, W, 3] float32, normalised  # doctest: +SKIP
    (2, 32)
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from editmgt_jax.checkpoint.convert.safetensors_io import read_config, read_state_dict, write_folder
from editmgt_jax.checkpoint.convert.table import (
    abstract_param_shapes,
    to_ours,
    to_theirs,
    unflatten,
)
from editmgt_jax.checkpoint.convert.text_clip import clip_text_rules
from editmgt_jax.common_types import to_precision
from editmgt_jax.evaluation.backbones import clip_vision, dinov2, vit
from editmgt_jax.evaluation.backbones.clip_text import CLIPTextTower, load_clip_text_half
from editmgt_jax.evaluation.backbones.encoder import VisionConfig, VisionOutput, VisionTransformer

WEIGHTS_NAME = "model.safetensors"
# Rows per jitted forward (or half of it for a few inputs): a long list of images compiles once.
EMBED_BATCH = 16
# What `embed` returns, per kind (the feature each benchmark compares).
EMBEDDING = {"clip": "image_embeds", "dino_vit": "cls", "dinov2": "pooler_output"}
_ARCHITECTURES = {"clip": clip_vision, "dino_vit": vit, "dinov2": dinov2}
_PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt")


def batch_bucket(n: int, cap: int = EMBED_BATCH) -> int:
    """Rows per forward for n inputs: `cap`, or half of it for a few (two shapes, so at most two
    compiles per input size)."""
    return cap // 2 if n <= cap // 2 else cap


def backbone_kind(config: Mapping[str, Any], folder: str = "") -> str:
    """'clip', 'dino_vit' or 'dinov2' from a config.json dict; raises for anything else."""
    model_type = config.get("model_type")
    for kind, module in _ARCHITECTURES.items():
        if model_type in module.MODEL_TYPES:
            return kind
    known = [t for m in _ARCHITECTURES.values() for t in m.MODEL_TYPES]
    raise ValueError(
        f"{folder or 'config'}: model_type={model_type!r} is not a metric backbone; expected one "
        f"of {known} (CLIP, DINO ViT or DINOv2 in transformers' layout)"
    )


def read_weights(folder: str) -> dict[str, np.ndarray]:
    """Every `*.safetensors` tensor of `folder`; a clear error for PyTorch pickles."""
    if not glob.glob(os.path.join(folder, "*.safetensors")):
        pickles = sorted(
            os.path.basename(p) for pat in _PICKLES for p in glob.glob(os.path.join(folder, pat))
        )
        if pickles:
            raise FileNotFoundError(
                f"{folder!r} holds PyTorch weights ({', '.join(pickles)}) but no *.safetensors; "
                "only safetensors can be read here (no torch). Convert them once where torch "
                "is installed: transformers' `AutoModel.from_pretrained(FOLDER)"
                ".save_pretrained(FOLDER, safe_serialization=True)`"
            )
    return read_state_dict(folder)


def _strip_prefix(state: dict[str, np.ndarray], prefix: str | None) -> dict[str, np.ndarray]:
    """Drops `prefix` (e.g. 'vit.' of ViTForImageClassification) when the weights carry it."""
    if not prefix or not any(k.startswith(prefix) for k in state):
        return state
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}


@functools.partial(jax.jit, static_argnums=0)
def _forward(model: VisionTransformer, params: Any, pixels: jax.Array) -> VisionOutput:
    return model.apply({"params": params}, pixels)


@dataclasses.dataclass
class Backbone:
    """A loaded metric backbone (see the module docstring).

    Attributes:
      kind: 'clip', 'dino_vit' or 'dinov2'.
      folder: where it was read from ('' for one made in memory).
      config: the `VisionConfig`.
      source_config: the config.json dict it came from (written back by `save_backbone`).
      model, params: the Linen module and its parameters.
      text: CLIP's text tower with its tokenizer (full CLIPModel folders only), else None.
    """

    kind: str
    folder: str
    config: VisionConfig
    source_config: dict
    model: VisionTransformer
    params: Any
    text: CLIPTextTower | None = None

    def outputs(self, pixels: np.ndarray) -> VisionOutput:
        """All outputs for float32 [B, H, W, C] normalised pixels, as numpy arrays."""
        pixels = np.asarray(pixels, np.float32)
        if pixels.ndim != 4:
            raise ValueError(
                f"Expected pixels [batch, height, width, channels], got {pixels.shape}"
            )
        parts = []
        batch = batch_bucket(len(pixels))
        for start in range(0, len(pixels), batch):
            chunk = pixels[start : start + batch]
            pad = batch - len(chunk)
            padded = np.concatenate([chunk, np.repeat(chunk[:1], pad, axis=0)]) if pad else chunk
            out = jax.device_get(_forward(self.model, self.params, jnp.asarray(padded)))
            parts.append([None if x is None else np.asarray(x)[: len(chunk)] for x in out])
        fields = [
            None if parts[0][i] is None else np.concatenate([p[i] for p in parts])
            for i in range(len(VisionOutput._fields))
        ]
        return VisionOutput(*fields)

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """float32 [B, E]: CLIP `image_embeds`, DINO ViT the class token of `last_hidden_state`,
        DINOv2 `pooler_output` (the same class token)."""
        out = self.outputs(pixels)
        return out.image_embeds if self.kind == "clip" else out.pooled

    def last_layer_keys(self, pixels: np.ndarray) -> np.ndarray:
        """float32 [B, 1 + patches, hidden]: the last block's key projection (heads
        concatenated), what PIE-Bench's structure distance compares."""
        return self.outputs(pixels).last_layer_keys

    def describe(self) -> dict[str, Any]:
        """What a report should say about this backbone."""
        cfg = self.config
        return dict(
            kind=self.kind,
            folder=os.path.abspath(self.folder) if self.folder else "",
            embedding=EMBEDDING[self.kind],
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            hidden_size=cfg.hidden_size,
            layers=cfg.num_hidden_layers,
            text_tower=self.text is not None,
        )


def _vision_config(kind: str, config: Mapping[str, Any], has_projection: bool) -> VisionConfig:
    if kind == "clip":
        return clip_vision.vision_config(config, has_projection)
    return _ARCHITECTURES[kind].vision_config(config)


def param_shapes(model: VisionTransformer) -> dict[str, tuple[int, ...]]:
    """Our '/'-path -> shape at the config's image size, without allocating."""
    cfg = model.config
    sample = jax.ShapeDtypeStruct(
        (1, cfg.image_size, cfg.image_size, cfg.num_channels), jnp.float32
    )
    return abstract_param_shapes(model, sample)


def load_backbone(folder: str, precision: str = "highest", with_text: bool = True) -> Backbone:
    """Reads a transformers-layout backbone folder (see the module docstring).

    Args:
      folder: the model folder (config.json + *.safetensors).
      precision: matmul precision name ('highest' by default: metrics want float32 accuracy on
        every platform).
      with_text: for a full CLIPModel folder, also load its text tower and tokenizer.
    Raises:
      FileNotFoundError: no folder, no config.json, no safetensors (PyTorch pickles named).
      ValueError: an unsupported model_type or config field; a CLIP folder without projection.
      ConversionError: listing every missing, unexpected or mis-shaped tensor.
    """
    config = read_config(folder)
    kind = backbone_kind(config, folder)
    state = read_weights(folder)
    module = _ARCHITECTURES[kind]
    state = _strip_prefix(state, getattr(module, "PREFIX", None))
    text = None
    if kind == "clip":
        if clip_vision.PROJECTION_KEY not in state:
            raise ValueError(
                f"{folder!r} has no {clip_vision.PROJECTION_KEY}: CLIP metrics compare projected "
                "image embeddings; use a CLIPVisionModelWithProjection or a full CLIPModel folder"
            )
        if with_text and clip_vision.is_full_clip(config):
            text = load_clip_text_half(folder, config, state)
    vision_state = {k: v for k, v in state.items() if not module.is_ignored(k)}
    vision = _vision_config(kind, config, has_projection=True)
    model = VisionTransformer(vision, precision=to_precision(precision))
    params = to_ours(
        module.rules(vision),
        vision_state,
        expected_shapes=param_shapes(model),
        what=f"{kind} backbone {folder!r}",
    )
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), params)
    return Backbone(kind, folder, vision, dict(config), model, params, text)


def init_backbone(config: Mapping[str, Any], seed: int = 0) -> Backbone:
    """A backbone of a transformers config dict with random weights (tests, smoke runs), drawn
    with numpy (no init compile): kernels N(0, 1/fan_in), norm gains 1 + N(0, 0.1), biases and
    layer scales N(0, 0.05) around their init, embeddings N(0, 1)."""
    kind = backbone_kind(config)
    vision = _vision_config(kind, config, has_projection=True)
    model = VisionTransformer(vision)
    rng = np.random.default_rng(seed)
    flat = {}
    for path, shape in param_shapes(model).items():
        name = path.rsplit("/", 1)[-1]
        noise = rng.normal(size=shape)
        if name == "kernel":
            value = noise / np.sqrt(np.prod(shape[:-1]))
        elif name == "scale":
            value = 1.0 + 0.1 * noise
        elif name.startswith("layer_scale"):
            value = float(vision.layerscale_value) + 0.05 * noise
        elif name == "bias":
            value = 0.05 * noise
        else:  # class and position embeddings
            value = noise
        flat[path] = jnp.asarray(value, jnp.float32)
    return Backbone(kind, "", vision, dict(config), model, unflatten(flat))


def save_backbone(folder: str, backbone: Backbone) -> None:
    """Writes `config.json` (the source config) + `model.safetensors` in transformers' layout,
    with the CLIP text tower's weights when the backbone has one (a full CLIPModel)."""
    module = _ARCHITECTURES[backbone.kind]
    state = to_theirs(module.rules(backbone.config), jax.device_get(backbone.params))
    if backbone.text is not None:
        text = backbone.text
        state.update(to_theirs(clip_text_rules(text.model.config), jax.device_get(text.params)))
    state = {k: np.asarray(v, np.float32) for k, v in state.items()}
    write_folder(folder, backbone.source_config, state, WEIGHTS_NAME)
