"""The vision transformer shared by the metric backbones (CLIP image tower, DINO ViT, DINOv2).

All three are the same pre-norm ViT and differ in switches, which `VisionConfig` names:

    pixels [B, H, W, C] --patch conv (stride p)--> [B, N, D] ; prepend the class token ;
    + position embeddings (bicubic-resized when the grid is not the trained one)
    --(CLIP: pre-LayerNorm)--> L x [ x + ls1 * Attn(LN1(x)) ; x + ls2 * FFN(LN2(x)) ]
    --ViT / DINOv2: LayerNorm on every token  |  CLIP: post-LayerNorm on the class token,
      then the visual projection

`ls1`, `ls2` are DINOv2's layer scales (1 elsewhere); FFN is fc1 -> activation -> fc2, or
DINOv2's SwiGLU (`weights_in` -> silu(x1) * x2 -> `weights_out`).

Position embeddings at another input size follow transformers (4.47): the patch-position grid is
resized with PyTorch's bicubic interpolation (A = -0.75, align_corners=False, source index
(i + 0.5) * in / out - 0.5, border indices clamped) to (H // p, W // p), unless the grid is the
trained one. `bicubic_matrix` builds that resize as a matrix per axis (it is separable).

Example (random weights):
    >>> import jax, jax.numpy as jnp
    >>> cfg = VisionConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
    ...                    intermediate_size=16, image_size=8, patch_size=4)
    >>> model = VisionTransformer(cfg)
    >>> params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
    >>> out = model.apply({"params": params}, jnp.zeros((2, 12, 8, 3)))  # a 3 x 2 grid
    >>> out.last_hidden_state.shape, out.pooled.shape, out.last_layer_keys.shape
    ((2, 7, 8), (2, 8), (2, 7, 8))
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from editmgt_jax.common_types import EMBED, HEADS, MLP, NORM, TEXT_EMBED, Array, DType
from editmgt_jax.models.text.layers import (
    ACTIVATIONS,
    LayerNorm,
    head_split,
    multi_head_attention,
)
from editmgt_jax.nn.linear import dense

# PyTorch's bicubic kernel parameter (upsample_bicubic2d).
BICUBIC_A = -0.75
# transformers' ACT2FN names that vision configs use, beyond those the text encoders know.
VISION_ACTIVATIONS = {
    **ACTIVATIONS,
    "gelu_python": ACTIVATIONS["gelu"],
    "gelu_fast": ACTIVATIONS["gelu_new"],
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}
FINAL_NORMS = ("all", "cls")


def vision_activation(name: str):
    """The activation called `name` in a transformers vision config (`hidden_act`)."""
    if name not in VISION_ACTIVATIONS:
        raise ValueError(
            f"hidden_act={name!r} is not supported; expected one of {sorted(VISION_ACTIVATIONS)}"
        )
    return VISION_ACTIVATIONS[name]


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """Every field that changes the math of the three backbones (names as transformers').

    Attributes:
      intermediate_size: width of the FFN's hidden layer (DINOv2: int(hidden * mlp_ratio); with
        SwiGLU, the width of each of its two halves).
      patch_bias: whether the patch convolution has a bias (ViT/DINOv2 yes, CLIP no).
      pre_layernorm: CLIP's LayerNorm on the embeddings before the first block.
      layerscale_value: DINOv2's layer scale (None: no layer scale).
      use_swiglu_ffn: DINOv2's SwiGLU feed-forward instead of fc1 -> act -> fc2.
      final_norm: "all" (LayerNorm on every token: ViT, DINOv2) or "cls" (CLIP's post-LayerNorm
        on the class token only; `last_hidden_state` is then the encoder output).
      projection_dim: width of CLIP's visual projection (None: no projection).
    """

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    qkv_bias: bool = True
    patch_bias: bool = True
    pre_layernorm: bool = False
    layerscale_value: float | None = None
    use_swiglu_ffn: bool = False
    final_norm: str = "all"
    projection_dim: int | None = None

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        for name in ("hidden_size", "num_hidden_layers", "intermediate_size", "patch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; expected a positive integer")
        if self.image_size < self.patch_size:
            raise ValueError(
                f"image_size={self.image_size} is smaller than patch_size={self.patch_size}"
            )
        if self.final_norm not in FINAL_NORMS:
            raise ValueError(f"final_norm={self.final_norm!r}; expected one of {FINAL_NORMS}")
        vision_activation(self.hidden_act)

    @property
    def trained_grid(self) -> int:
        """Patches per side of the position embeddings (image_size // patch_size)."""
        return self.image_size // self.patch_size

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


class VisionOutput(NamedTuple):
    """last_hidden_state [B, 1 + N, D] (CLIP: the encoder output; ViT/DINOv2: after the final
    LayerNorm); pooled [B, D] (CLIP: post-LayerNorm class token; else last_hidden_state[:, 0]);
    image_embeds [B, projection_dim] (CLIP's projected pooled; None without projection);
    last_layer_keys [B, 1 + N, D]: the last block's key projection, heads concatenated."""

    last_hidden_state: Array
    pooled: Array
    image_embeds: Array | None
    last_layer_keys: Array


def cubic_weights(t: np.ndarray, a: float = BICUBIC_A) -> np.ndarray:
    """PyTorch's 4-tap cubic convolution weights for taps at offsets -1, 0, 1, 2 of the fraction
    t in [0, 1): float64 [..., 4]."""
    t = np.asarray(t, np.float64)

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """float64 [out_size, in_size]: `out = M @ x` resizes x along one axis as PyTorch's
    `interpolate(mode="bicubic", align_corners=False, size=...)` does."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"bicubic resize needs positive sizes, got {in_size} -> {out_size}")
    scale = in_size / out_size
    source = (np.arange(out_size) + 0.5) * scale - 0.5  # no clamping for cubic
    base = np.floor(source)
    weights = cubic_weights(source - base)  # [out, 4]
    matrix = np.zeros((out_size, in_size))
    for tap in range(4):
        index = np.clip(base.astype(np.int64) - 1 + tap, 0, in_size - 1)
        np.add.at(matrix, (np.arange(out_size), index), weights[:, tap])
    return matrix


def resize_position_grid(patch_positions: Array, grid: tuple[int, int]) -> Array:
    """Patch position embeddings [S * S, D] (row-major) -> [gh * gw, D] for `grid` = (gh, gw)."""
    count, dim = patch_positions.shape
    side = math.isqrt(count)
    if side * side != count:
        raise ValueError(
            f"{count} patch position embeddings do not form a square grid; cannot interpolate"
        )
    if grid == (side, side):
        return patch_positions
    rows = jnp.asarray(bicubic_matrix(side, grid[0]), jnp.float32)
    cols = jnp.asarray(bicubic_matrix(side, grid[1]), jnp.float32)
    table = patch_positions.astype(jnp.float32).reshape(side, side, dim)
    resized = jnp.einsum("ai,bj,ijd->abd", rows, cols, table, precision=jax.lax.Precision.HIGHEST)
    return resized.reshape(grid[0] * grid[1], dim).astype(patch_positions.dtype)


def swiglu_hidden_size(hidden_size: int, mlp_ratio: float) -> int:
    """Width of each SwiGLU half in transformers' Dinov2SwiGLUFFN (2/3 of the MLP width,
    rounded up to a multiple of 8)."""
    width = int(hidden_size * mlp_ratio)
    return (int(width * 2 / 3) + 7) // 8 * 8


class VisionLayer(nn.Module):
    """One pre-norm block: x + ls1 * Attn(LN1(x)), then + ls2 * FFN(LN2(x)).

    [B, T, D] -> ([B, T, D], keys [B, T, D]: the key projection, heads concatenated).
    """

    config: VisionConfig
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    precision: Any = None

    def _scale(self, name: str, x: Array) -> Array:
        if self.config.layerscale_value is None:
            return x
        value = float(self.config.layerscale_value)
        gain = self.param(
            name,
            nn.with_logical_partitioning(nn.initializers.constant(value), (NORM,)),
            (x.shape[-1],),
            self.param_dtype,
        )
        return x * gain.astype(x.dtype)

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, Array]:
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
        norm_kw = dict(eps=cfg.layer_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype)
        d, heads = cfg.hidden_size, cfg.num_attention_heads
        h = LayerNorm(name="norm1", **norm_kw)(x)
        q = dense(d, (EMBED, HEADS), use_bias=cfg.qkv_bias, name="query", **kw)(h)
        k = dense(d, (EMBED, HEADS), use_bias=cfg.qkv_bias, name="key", **kw)(h)
        v = dense(d, (EMBED, HEADS), use_bias=cfg.qkv_bias, name="value", **kw)(h)
        attn = multi_head_attention(
            head_split(q, heads),
            head_split(k, heads),
            head_split(v, heads),
            None,
            cfg.head_dim**-0.5,
            precision=self.precision,
        )
        attn = dense(d, (HEADS, EMBED), use_bias=True, name="out", **kw)(attn.reshape(x.shape))
        x = x + self._scale("layer_scale1", attn)
        h = LayerNorm(name="norm2", **norm_kw)(x)
        if cfg.use_swiglu_ffn:
            both = dense(
                2 * cfg.intermediate_size, (EMBED, MLP), use_bias=True, name="swiglu_in", **kw
            )(h)
            gate, value = jnp.split(both, 2, axis=-1)
            h = dense(d, (MLP, EMBED), use_bias=True, name="swiglu_out", **kw)(
                jax.nn.silu(gate) * value
            )
        else:
            h = dense(cfg.intermediate_size, (EMBED, MLP), use_bias=True, name="fc1", **kw)(h)
            h = dense(d, (MLP, EMBED), use_bias=True, name="fc2", **kw)(
                vision_activation(cfg.hidden_act)(h)
            )
        return x + self._scale("layer_scale2", h), k


class VisionTransformer(nn.Module):
    """pixels [B, H, W, C] (normalised, channels last) -> `VisionOutput`.

    Parameters: `patch_embedding` (Conv kernel [p, p, C, D], bias when `patch_bias`),
    `class_embedding` [D], `position_embedding` [1 + S * S, D], `pre_norm` (CLIP), `layer_{i}`,
    `final_norm`, `projection` (kernel [D, projection_dim], no bias). Sides that are not
    multiples of the patch size drop their remainder (as a stride-p convolution does).
    """

    config: VisionConfig
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, pixels: Array) -> VisionOutput:
        cfg = self.config
        if pixels.ndim != 4 or pixels.shape[-1] != cfg.num_channels:
            raise ValueError(
                f"Expected pixels [batch, height, width, {cfg.num_channels}], got {pixels.shape}"
            )
        p = cfg.patch_size
        grid = (pixels.shape[1] // p, pixels.shape[2] // p)
        if min(grid) < 1:
            raise ValueError(f"Input {pixels.shape[1:3]} is smaller than one {p}x{p} patch")
        patches = nn.Conv(
            cfg.hidden_size,
            (p, p),
            strides=(p, p),
            padding="VALID",
            use_bias=cfg.patch_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            precision=self.precision,
            name="patch_embedding",
        )(pixels.astype(self.dtype))
        batch = pixels.shape[0]
        patches = patches.reshape(batch, grid[0] * grid[1], cfg.hidden_size)
        cls = self.param(
            "class_embedding",
            nn.with_logical_partitioning(nn.initializers.normal(1.0), (EMBED,)),
            (cfg.hidden_size,),
            self.param_dtype,
        )
        positions = self.param(
            "position_embedding",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), (TEXT_EMBED, EMBED)),
            (cfg.trained_grid**2 + 1, cfg.hidden_size),
            self.param_dtype,
        )
        positions = jnp.concatenate(
            [positions[:1], resize_position_grid(positions[1:], grid)], axis=0
        )
        cls_tokens = jnp.broadcast_to(cls.astype(self.dtype), (batch, 1, cfg.hidden_size))
        x = jnp.concatenate([cls_tokens, patches], axis=1) + positions[None].astype(self.dtype)
        norm_kw = dict(eps=cfg.layer_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype)
        if cfg.pre_layernorm:
            x = LayerNorm(name="pre_norm", **norm_kw)(x)
        keys = None
        for i in range(cfg.num_hidden_layers):
            x, keys = VisionLayer(
                cfg, self.dtype, self.param_dtype, self.precision, name=f"layer_{i}"
            )(x)
        final = LayerNorm(name="final_norm", **norm_kw)
        if cfg.final_norm == "all":
            last = final(x)
            pooled = last[:, 0]
        else:
            last = x
            pooled = final(x[:, 0])
        embeds = None
        if cfg.projection_dim is not None:
            embeds = dense(
                cfg.projection_dim,
                (EMBED, TEXT_EMBED),
                use_bias=False,
                name="projection",
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                precision=self.precision,
            )(pooled)
        return VisionOutput(last, pooled, embeds, keys)
