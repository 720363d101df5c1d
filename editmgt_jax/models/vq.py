"""The VQ-GAN image tokenizer (diffusers `VQModel`, aMUSEd/Meissonic layout), channels-last.

Images [batch, height, width, 3] in [0, 1] go straight into the encoder (the official pipelines
preprocess without the usual 2x - 1 scaling), are reduced by 2^(levels - 1) to a latent grid,
projected by a 1x1 `quant_conv`, and snapped to the nearest codebook entry. Decoding looks the ids
up in the codebook, applies the 1x1 `post_quant_conv` and the mirrored decoder; `decode_ids` clips
the result to [0, 1] as the official pipeline does.

Example:
    >>> import jax, jax.numpy as jnp
    >>> config = VQConfig(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
    ...                   latent_channels=4, num_vq_embeddings=16)
    >>> model = VQModel(config)
    >>> images = jnp.full((1, 8, 8, 3), 0.5)
    >>> params = model.init(jax.random.key(0), images)["params"]
    >>> ids = model.apply({"params": params}, images, method=model.encode_to_ids)
    >>> ids.shape, ids.dtype
    ((1, 4, 4), dtype('int32'))
    >>> model.apply({"params": params}, ids, method=model.decode_ids).shape
    (1, 8, 8, 3)

The parameters are plain (not logically partitioned): even the released VQ is small enough to be
replicated, and its activations are sharded along the batch by the caller.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from editmgt_jax.common_types import Array, DType

# diffusers builds every GroupNorm of the VQ-GAN with this epsilon.
GROUP_NORM_EPS = 1e-6
_DOWN_BLOCK = "DownEncoderBlock2D"
_UP_BLOCK = "UpDecoderBlock2D"


@dataclasses.dataclass(frozen=True)
class VQConfig:
    """Structure of the tokenizer; field names follow the diffusers `VQModel` constructor.

    Attributes:
      in_channels: image channels fed to the encoder (3: RGB).
      out_channels: image channels produced by the decoder.
      block_out_channels: width of each level; the image is halved between consecutive levels,
        so the stride (pixels per token side) is 2^(len - 1).
      layers_per_block: ResNet blocks per encoder level (the decoder has one more per level).
      norm_num_groups: GroupNorm groups; must divide every width.
      latent_channels: channels of the encoder output and of the decoder input.
      vq_embed_dim: codebook vector size (None: `latent_channels`).
      num_vq_embeddings: codebook size.
      mid_block_add_attention: single-head self-attention in the middle blocks.
      scaling_factor, sample_size, force_upcast, lookup_from_codebook: carried through to the
        exported config.json unchanged; the computation does not use them.
    """

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 256, 512, 768)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    latent_channels: int = 64
    vq_embed_dim: int | None = None
    num_vq_embeddings: int = 8192
    mid_block_add_attention: bool = False
    scaling_factor: float = 0.18215
    sample_size: int = 32
    force_upcast: bool = True
    lookup_from_codebook: bool = True

    def __post_init__(self):
        object.__setattr__(
            self, "block_out_channels", tuple(int(c) for c in self.block_out_channels)
        )
        if not self.block_out_channels:
            raise ValueError("block_out_channels is empty; expected at least one level width")
        for name in ("in_channels", "out_channels", "layers_per_block", "norm_num_groups"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r}; expected a positive integer")
        if self.latent_channels < 1 or self.num_vq_embeddings < 1 or self.embed_dim < 1:
            raise ValueError(
                f"latent_channels={self.latent_channels}, vq_embed_dim={self.vq_embed_dim}, "
                f"num_vq_embeddings={self.num_vq_embeddings}; expected positive integers"
            )
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(
                f"block_out_channels {self.block_out_channels} has widths {bad} not divisible by "
                f"norm_num_groups={self.norm_num_groups}"
            )

    @property
    def embed_dim(self) -> int:
        """Codebook vector size."""
        return self.latent_channels if self.vq_embed_dim is None else self.vq_embed_dim

    @property
    def stride(self) -> int:
        """Pixels per token along each side."""
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any]) -> VQConfig:
        """From a diffusers `VQModel` config.json dict; rejects layouts this port does not build."""
        levels = len(config.get("block_out_channels", ()))
        checks = {
            "down_block_types": [_DOWN_BLOCK] * levels,
            "up_block_types": [_UP_BLOCK] * levels,
            "act_fn": "silu",
            "norm_type": "group",
        }
        for key, want in checks.items():
            got = config.get(key, want)
            if (list(got) if isinstance(want, list) else got) != want:
                raise ValueError(f"VQ config has {key}={got!r}; this port supports only {want!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in config.items() if k in fields}
        if "block_out_channels" in kwargs:
            kwargs["block_out_channels"] = tuple(kwargs["block_out_channels"])
        return cls(**kwargs)

    def to_diffusers(self) -> dict[str, Any]:
        """The config.json dict of the equivalent diffusers `VQModel`."""
        out = dataclasses.asdict(self)
        out["block_out_channels"] = list(self.block_out_channels)
        levels = len(self.block_out_channels)
        out.update(
            _class_name="VQModel",
            act_fn="silu",
            norm_type="group",
            down_block_types=[_DOWN_BLOCK] * levels,
            up_block_types=[_UP_BLOCK] * levels,
        )
        return out


# --------------------------------------------------------------------------------------------------
# Pure functions: quantization, input checks.


def nearest_code(latents: Array, codebook: Array) -> Array:
    """Index of the nearest codebook vector (Euclidean) for each latent.

    Args:
      latents: [..., dim] float.
      codebook: [codes, dim] float.
    Returns:
      [...] int32.
    """
    z = latents.astype(jnp.float32).reshape(-1, latents.shape[-1])
    e = codebook.astype(jnp.float32)
    # |z - e|^2 without the [N, codes, dim] intermediate; HIGHEST keeps fp32 accuracy on TPU so
    # that near-ties resolve as in the reference.
    cross = jnp.matmul(z, e.T, precision=jax.lax.Precision.HIGHEST)
    dist = jnp.sum(z * z, axis=1, keepdims=True) - 2.0 * cross + jnp.sum(e * e, axis=1)[None, :]
    return jnp.argmin(dist, axis=-1).astype(jnp.int32).reshape(latents.shape[:-1])


def lookup_codes(ids: Array, codebook: Array) -> Array:
    """Codebook rows for integer ids: [...] -> [..., dim].

    Ids outside [0, codes) give NaN vectors (no silent clamping under jit); the host-side checks
    in `VQModel.decode_ids` reject them with an error on concrete inputs.
    """
    return jnp.take(codebook, ids, axis=0, mode="fill", fill_value=jnp.nan)


def straight_through(latents: Array, quantized: Array) -> Array:
    """Forward value `quantized`, gradient of the identity with respect to `latents`."""
    return latents + jax.lax.stop_gradient(quantized - latents)


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_images(images: Any, channels: int, stride: int) -> None:
    """Raises ValueError unless `images` is [batch, height, width, channels] float in [0, 1].

    Shapes and dtypes are checked always (also while tracing); values only for concrete arrays,
    so the check never breaks `jax.jit`.
    """
    shape, dtype = np.shape(images), jnp.result_type(images)
    if len(shape) != 4 or shape[-1] != channels:
        raise ValueError(
            f"images have shape {shape}; expected [batch, height, width, {channels}] channels-last"
            + (" (RGB)" if channels == 3 else "")
        )
    if not jnp.issubdtype(dtype, jnp.floating):
        hint = " (divide uint8 images by 255)" if dtype == jnp.uint8 else ""
        raise ValueError(f"images have dtype {dtype}; expected floats in [0, 1]{hint}")
    height, width = shape[1], shape[2]
    if height % stride or width % stride or height == 0 or width == 0:
        raise ValueError(
            f"image size {height}x{width} is not a positive multiple of the VQ stride {stride}; "
            f"resize or crop to e.g. {max(stride, height // stride * stride)}x"
            f"{max(stride, width // stride * stride)}"
        )
    if _is_concrete(images):
        values = np.asarray(images)
        if values.size and not (
            np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1
        ):
            raise ValueError(
                f"image values span [{values.min():.4g}, {values.max():.4g}]; expected "
                "finite values in [0, 1] (not [-1, 1] or [0, 255])"
            )


def check_ids(ids: Any, num_codes: int) -> None:
    """Raises ValueError unless `ids` is an integer [batch, h, w] array of codes in [0, num_codes)."""
    shape, dtype = np.shape(ids), jnp.result_type(ids)
    if len(shape) != 3:
        raise ValueError(f"token ids have shape {shape}; expected [batch, h, w]")
    if not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"token ids have dtype {dtype}; expected integers")
    if _is_concrete(ids):
        values = np.asarray(ids)
        if values.size and (values.min() < 0 or values.max() >= num_codes):
            raise ValueError(
                f"token ids span [{values.min()}, {values.max()}]; expected codes in "
                f"[0, {num_codes - 1}] (codebook of {num_codes})"
            )


# --------------------------------------------------------------------------------------------------
# Layers.


class _Layers:
    """Layer factories with the module's dtype policy.

    Mixed into Linen modules that declare `dtype` (compute), `param_dtype` and `precision`
    (matmul precision) after their own fields, so that `VQModel(config)` works positionally.
    """

    def conv(self, features: int, kernel: int, name: str, stride: int = 1, padding: Any = "SAME"):
        return nn.Conv(
            features,
            (kernel, kernel),
            strides=(stride, stride),
            padding=padding,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            precision=self.precision,
            name=name,
        )

    def dense(self, features: int, name: str):
        return nn.Dense(
            features,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            precision=self.precision,
            name=name,
        )

    def group_norm(self, groups: int, name: str):
        # Statistics in float32 (flax upcasts reductions); the two-pass variance matches torch.
        return nn.GroupNorm(
            num_groups=groups,
            epsilon=GROUP_NORM_EPS,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            use_fast_variance=False,
            name=name,
        )

    @property
    def kw(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "param_dtype": self.param_dtype, "precision": self.precision}


class ResnetBlock(nn.Module, _Layers):
    """GroupNorm -> SiLU -> conv3x3, twice, plus a (1x1-projected) skip: [B,H,W,Cin] -> [B,H,W,out]."""

    features: int = 0
    groups: int = 32
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        h = nn.silu(self.group_norm(self.groups, "norm1")(x))
        h = self.conv(self.features, 3, "conv1")(h)
        h = nn.silu(self.group_norm(self.groups, "norm2")(h))
        h = self.conv(self.features, 3, "conv2")(h)
        if x.shape[-1] != self.features:
            x = self.dense(self.features, "conv_shortcut")(x)
        return x + h


class SelfAttention(nn.Module, _Layers):
    """Single-head spatial self-attention with a residual: [B,H,W,C] -> [B,H,W,C]."""

    groups: int = 32
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        batch, height, width, channels = x.shape
        h = self.group_norm(self.groups, "group_norm")(x).reshape(batch, height * width, channels)
        q = self.dense(channels, "to_q")(h)
        k = self.dense(channels, "to_k")(h)
        v = self.dense(channels, "to_v")(h)
        logits = jnp.einsum("bqc,bkc->bqk", q, k, precision=self.precision)
        weights = jax.nn.softmax(logits.astype(jnp.float32) / math.sqrt(channels), axis=-1)
        h = jnp.einsum("bqk,bkc->bqc", weights.astype(v.dtype), v, precision=self.precision)
        h = self.dense(channels, "to_out")(h)
        return x + h.reshape(batch, height, width, channels)


class MidBlock(nn.Module, _Layers):
    """ResNet, optional self-attention, ResNet, at constant width: [B,H,W,C] -> [B,H,W,C]."""

    groups: int = 32
    attention: bool = False
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        features = x.shape[-1]
        x = ResnetBlock(features=features, groups=self.groups, name="resnet_0", **self.kw)(x)
        if self.attention:
            x = SelfAttention(groups=self.groups, name="attention", **self.kw)(x)
        return ResnetBlock(features=features, groups=self.groups, name="resnet_1", **self.kw)(x)


class Encoder(nn.Module, _Layers):
    """Images [B,H,W,Cin] -> latents [B,H/s,W/s,latent_channels], s = 2^(levels-1)."""

    config: VQConfig = VQConfig()
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        groups = cfg.norm_num_groups
        x = self.conv(cfg.block_out_channels[0], 3, "conv_in")(x.astype(self.dtype))
        last = len(cfg.block_out_channels) - 1
        for level, width in enumerate(cfg.block_out_channels):
            for i in range(cfg.layers_per_block):
                x = ResnetBlock(
                    features=width, groups=groups, name=f"down_{level}_resnet_{i}", **self.kw
                )(x)
            if level != last:
                # Asymmetric padding (bottom/right only) as the reference's stride-2 conv.
                x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
                x = self.conv(width, 3, f"down_{level}_downsample", stride=2, padding="VALID")(x)
        x = MidBlock(groups=groups, attention=cfg.mid_block_add_attention, name="mid", **self.kw)(x)
        x = nn.silu(self.group_norm(groups, "norm_out")(x))
        return self.conv(cfg.latent_channels, 3, "conv_out")(x)


class Decoder(nn.Module, _Layers):
    """Latents [B,h,w,latent_channels] -> images [B,h*s,w*s,Cout] (unclipped)."""

    config: VQConfig = VQConfig()
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        groups = cfg.norm_num_groups
        widths = cfg.block_out_channels[::-1]
        x = self.conv(widths[0], 3, "conv_in")(x.astype(self.dtype))
        x = MidBlock(groups=groups, attention=cfg.mid_block_add_attention, name="mid", **self.kw)(x)
        last = len(widths) - 1
        for level, width in enumerate(widths):
            for i in range(cfg.layers_per_block + 1):
                x = ResnetBlock(
                    features=width, groups=groups, name=f"up_{level}_resnet_{i}", **self.kw
                )(x)
            if level != last:
                x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # nearest-neighbour 2x
                x = self.conv(width, 3, f"up_{level}_upsample")(x)
        x = nn.silu(self.group_norm(groups, "norm_out")(x))
        return self.conv(cfg.out_channels, 3, "conv_out")(x)


class Codebook(nn.Module):
    """The VQ codebook parameter `embedding` [codes, dim]."""

    num_codes: int
    dim: int
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self) -> Array:
        limit = 1.0 / self.num_codes
        init = lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -limit, limit)
        return self.param("embedding", init, (self.num_codes, self.dim), self.param_dtype)


# --------------------------------------------------------------------------------------------------
# The model.


class VQModel(nn.Module, _Layers):
    """The tokenizer. Public methods (use with `model.apply(..., method=...)`):

    - `encode_to_ids(images [B,H,W,3] in [0,1]) -> int32 [B,H/s,W/s]`
    - `decode_ids(ids [B,h,w]) -> images [B,h*s,w*s,3] in [0,1]`
    - `encode(images) -> latents [B,h,w,embed_dim]` (after `quant_conv`, before quantization)
    - `quantize(latents) -> (straight-through quantized, ids, losses)`
    - `decode_latents(quantized [B,h,w,embed_dim]) -> unclipped images`
    - `__call__(images) -> (unclipped reconstruction, aux)` for training.
    """

    config: VQConfig = VQConfig()
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    precision: Any = None

    def setup(self):
        cfg = self.config
        self.encoder = Encoder(config=cfg, **self.kw)
        self.quant_conv = self.dense(cfg.embed_dim, "quant_conv")
        self.codebook = Codebook(cfg.num_vq_embeddings, cfg.embed_dim, self.param_dtype)
        self.post_quant_conv = self.dense(cfg.latent_channels, "post_quant_conv")
        self.decoder = Decoder(config=cfg, **self.kw)

    def encode(self, images: Array) -> Array:
        """[B,H,W,Cin] float in [0,1] -> latents [B,H/s,W/s,embed_dim] in `dtype`."""
        check_images(images, self.config.in_channels, self.config.stride)
        return self.quant_conv(self.encoder(images))

    def quantize(self, latents: Array) -> tuple[Array, Array, dict[str, Array]]:
        """Nearest-code quantization with a straight-through gradient.

        Args:
          latents: [B,h,w,embed_dim].
        Returns:
          quantized [B,h,w,embed_dim] float32 (value: the codes; gradient: to `latents`),
          ids [B,h,w] int32, and losses {"codebook": |sg(z) - e|^2, "commitment": |z - sg(e)|^2}
          (means over all elements, float32).
        """
        codebook = self.codebook()
        z = latents.astype(jnp.float32)
        ids = nearest_code(z, codebook)
        codes = lookup_codes(ids, codebook.astype(jnp.float32))
        losses = {
            "codebook": jnp.mean(jnp.square(jax.lax.stop_gradient(z) - codes)),
            "commitment": jnp.mean(jnp.square(z - jax.lax.stop_gradient(codes))),
        }
        return straight_through(z, codes), ids, losses

    def encode_to_ids(self, images: Array) -> Array:
        """[B,H,W,Cin] float in [0,1] -> token ids [B,H/s,W/s] int32."""
        return nearest_code(self.encode(images), self.codebook())

    def decode_latents(self, quantized: Array) -> Array:
        """Quantized latents [B,h,w,embed_dim] -> images [B,h*s,w*s,Cout], float32, unclipped."""
        return self.decoder(self.post_quant_conv(quantized)).astype(jnp.float32)

    def decode_ids(self, ids: Array, clip: bool = True) -> Array:
        """Token ids [B,h,w] -> images [B,h*s,w*s,Cout] float32, clipped to [0, 1] unless `clip=False`."""
        check_ids(ids, self.config.num_vq_embeddings)
        images = self.decode_latents(lookup_codes(ids, self.codebook()))
        return jnp.clip(images, 0.0, 1.0) if clip else images

    def __call__(self, images: Array) -> tuple[Array, dict[str, Array]]:
        """Training forward pass.

        Args:
          images: [B,H,W,Cin] float in [0,1].
        Returns:
          reconstruction [B,H,W,Cout] float32 (unclipped) and aux: `ids` [B,h,w], `latents`
          [B,h,w,embed_dim] float32 (for dead-code restarts), `codebook_loss`, `commitment_loss`.
        """
        latents = self.encode(images)
        quantized, ids, losses = self.quantize(latents)
        aux = {
            "ids": ids,
            "latents": latents.astype(jnp.float32),
            "codebook_loss": losses["codebook"],
            "commitment_loss": losses["commitment"],
        }
        return self.decode_latents(quantized), aux


class PatchDiscriminator(nn.Module, _Layers):
    """A small PatchGAN critic for the optional adversarial loss: [B,H,W,3] -> logits [B,h,w,1].

    Inputs are images in [0, 1]; conv 4x4 stride 2 layers with GroupNorm and leaky ReLU.
    """

    widths: tuple[int, ...] = (32, 64, 128)
    groups: int = 8
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = x.astype(self.dtype) * 2.0 - 1.0
        for i, width in enumerate(self.widths):
            x = self.conv(width, 4, f"conv_{i}", stride=2)(x)
            if i:
                x = self.group_norm(min(self.groups, width), f"norm_{i}")(x)
            x = nn.leaky_relu(x, 0.2)
        return self.conv(1, 3, "conv_logits")(x).astype(jnp.float32)
