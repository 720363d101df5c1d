"""A local tokenizer: each cell of `patch_size` x `patch_size` pixels is one code of a patch codebook.

The id of a cell is the nearest codebook patch (Euclidean, in pixels), and decoding an id is that
patch: nothing sees past its own cell. So a cell whose pixels did not change keeps the source's id
exactly, and a changed id decodes to pixels inside its own cell only. That is what an editing
model wants from its tokens (the VQ-GAN's receptive field turns a local change into a wide change
of ids; DESIGN section 6): the tokens that differ between source and target are the cells whose
pixels differ, and region-hold / paste-back keep everything else bit-exact.

It is the tokenizer of the embedded default model, whose world of flat colours, cell-aligned
patterns and anti-aliased shapes a codebook of patches covers closely. The codebook is fitted by
k-means on patches of that world (`launch.fit_patch_vq`). Same public methods as `VQModel`.

Example:
    >>> import jax.numpy as jnp
    >>> config = PatchVQConfig(patch_size=2, num_vq_embeddings=2)
    >>> model = PatchVQ(config)
    >>> codebook = jnp.stack([jnp.zeros(12), jnp.ones(12)])  # a black and a white patch
    >>> images = jnp.zeros((1, 4, 4, 3)).at[:, :2, :2].set(1.0)
    >>> ids = model.apply({"params": {"codebook": codebook}}, images, method=model.encode_to_ids)
    >>> ids.tolist()
    [[[1, 0], [0, 0]]]
    >>> bool((model.apply({"params": {"codebook": codebook}}, ids, method=model.decode_ids)
    ...       == images).all())
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from editmgt_jax.common_types import Array, DType
from editmgt_jax.models.source_refiner import SourceRefiner
from editmgt_jax.models.vq import check_ids, check_images, lookup_codes, nearest_code

CLASS_NAME = "PatchVQ"


@dataclasses.dataclass(frozen=True)
class PatchVQConfig:
    """Attributes:
    patch_size: pixels per cell side (the tokenizer's stride).
    in_channels: image channels (3: RGB).
    num_vq_embeddings: codebook size.
    refiner_width: channels of the source-guided decoder of changed cells
        (`source_refiner.SourceRefiner`, ours); 0: none (decoding is the codebook patches).
    refiner_depth: its 3 x 3 convolutions.
    """

    patch_size: int = 4
    in_channels: int = 3
    num_vq_embeddings: int = 1024
    refiner_width: int = 0
    refiner_depth: int = 3

    def __post_init__(self):
        for name in ("patch_size", "in_channels", "num_vq_embeddings", "refiner_depth"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"PatchVQConfig.{name}={getattr(self, name)}; expected >= 1")
        if int(self.refiner_width) < 0:
            raise ValueError(f"PatchVQConfig.refiner_width={self.refiner_width}; expected >= 0")

    @property
    def stride(self) -> int:
        """Pixels per token along each side."""
        return self.patch_size

    @property
    def out_channels(self) -> int:
        return self.in_channels

    @property
    def embed_dim(self) -> int:
        """Codebook vector size: the pixels of one cell."""
        return self.patch_size * self.patch_size * self.in_channels

    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any]) -> PatchVQConfig:
        """From the config.json dict (`to_diffusers`); other keys are ignored."""
        if config.get("_class_name", CLASS_NAME) != CLASS_NAME:
            raise ValueError(f"config is a {config['_class_name']!r}, not a {CLASS_NAME}")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: int(v) for k, v in config.items() if k in fields})

    def to_diffusers(self) -> dict[str, Any]:
        """The config.json dict (named like `VQConfig.to_diffusers`, so either one is stored)."""
        return dict(dataclasses.asdict(self), _class_name=CLASS_NAME)


def to_patches(images: Array, patch_size: int) -> Array:
    """[B, H, W, C] -> [B, H/p, W/p, p*p*C] (row-major pixels of each cell, channels last)."""
    b, h, w, c = images.shape
    p = patch_size
    x = images.reshape(b, h // p, p, w // p, p, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h // p, w // p, p * p * c)


def from_patches(patches: Array, patch_size: int, channels: int) -> Array:
    """Inverse of `to_patches`: [B, h, w, p*p*C] -> [B, h*p, w*p, C]."""
    b, h, w, _ = patches.shape
    p = patch_size
    x = patches.reshape(b, h, w, p, p, channels).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * p, w * p, channels)


class PatchVQ(nn.Module):
    """The patch tokenizer. Public methods (use with `model.apply(..., method=...)`):

    - `encode_to_ids(images [B,H,W,C] in [0,1]) -> int32 [B,H/p,W/p]`
    - `decode_ids(ids [B,h,w]) -> images [B,h*p,w*p,C] in [0,1]`

    - `refine(decoded [B,H,W,C], source [B,H,W,C], changed bool [B,H,W]) -> [B,H,W,C]` (with a
      refiner: the changed pixels from the source-guided decoder; else `decoded` where changed)

    Params: `codebook` [num_vq_embeddings, p*p*C], patches in [0, 1]; with `refiner_width`, the
    refiner's under `refiner`.
    """

    config: PatchVQConfig = PatchVQConfig()
    dtype: DType = jnp.float32  # accepted for the VQModel interface; distances are float32
    param_dtype: DType = jnp.float32

    def setup(self):
        cfg = self.config
        # Mid-gray patches: the codebook is fitted (k-means), not learned by gradient.
        init = lambda key, shape, dtype: jnp.full(shape, 0.5, dtype)
        self.codebook = self.param(
            "codebook", init, (cfg.num_vq_embeddings, cfg.embed_dim), self.param_dtype
        )
        if cfg.refiner_width:
            self.refiner = SourceRefiner(cfg.refiner_width, cfg.refiner_depth)

    @property
    def has_refiner(self) -> bool:
        return bool(self.config.refiner_width)

    def __call__(self, images: Array) -> Array:
        """Round trip (used to initialise params): images -> decoded images (refined as if
        every cell changed, so a refiner's params are created too)."""
        decoded = self.decode_ids(self.encode_to_ids(images))
        if self.has_refiner:
            decoded = self.refine(decoded, images, jnp.ones(images.shape[:3], bool))
        return decoded

    def refine(self, decoded: Array, source: Array, changed: Array) -> Array:
        """Changed pixels from the source-guided decoder (`decoded` there without a refiner),
        the source's elsewhere. decoded / source [B,H,W,C] in [0,1]; changed bool [B,H,W]."""
        if not self.has_refiner:
            return jnp.where(changed[..., None], decoded, source)
        return self.refiner(decoded, source, changed)

    def encode_to_ids(self, images: Array) -> Array:
        """[B,H,W,C] float in [0,1] -> token ids [B,H/p,W/p] int32 (nearest codebook patch)."""
        cfg = self.config
        check_images(images, cfg.in_channels, cfg.stride)
        return nearest_code(to_patches(images.astype(jnp.float32), cfg.patch_size), self.codebook)

    def decode_ids(self, ids: Array, clip: bool = True) -> Array:
        """Token ids [B,h,w] -> images [B,h*p,w*p,C] float32 (the codebook patches; clipped to
        [0, 1] unless `clip=False`)."""
        cfg = self.config
        check_ids(ids, cfg.num_vq_embeddings)
        patches = lookup_codes(ids, self.codebook.astype(jnp.float32))
        images = from_patches(patches, cfg.patch_size, cfg.in_channels)
        return jnp.clip(images, 0.0, 1.0) if clip else images
