"""The transformer's configuration: the official constructor fields plus our execution options."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from editmgt_jax.common_types import PRECISIONS, to_dtype
from editmgt_jax.nn.attention import DEFAULT_QUERY_CHUNK

CONNECTOR_TYPES = ("none", "linear")
TIMESTEP_CONVENTIONS = ("official", "mask_ratio")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
ATTENTION_IMPLS = ("xla", "cudnn", "auto", "splash", "splash_interpret")
MICRO_COND_CHANNELS = 256  # per micro-conditioning scalar (width, height, crop top/left, aesthetic)
NUM_MICRO_CONDS = 5
TIMESTEP_CHANNELS = 256
TIMESTEP_SCALE = 1000.0  # the official forward multiplies t by 1000
ROPE_THETA = 10000.0
NORM_EPS = 1e-6
MLP_RATIO = 4

# Official constructor fields that do not change the computation.
_IGNORED_OFFICIAL_FIELDS = (
    "patch_size",
    "in_channels",
    "guidance_embeds",
    "_class_name",
    "_diffusers_version",
    "_name_or_path",
)


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Shape of an EditMGT/Meissonic transformer, and how to run it.

    The first block of fields mirrors the official `Transformer2DModel` constructor (names kept), so a
    released `config.json` maps onto it; the second block is ours (precision, layer scan, remat).
    """

    num_layers: int = 14  # double-stream blocks
    num_single_layers: int = 28
    num_attention_heads: int = 8
    attention_head_dim: int = 128
    joint_attention_dim: int = 2304  # width of the text encoder states
    pooled_projection_dim: int = 1024
    axes_dims_rope: tuple[int, ...] = (16, 56, 56)
    vocab_size: int = 8256  # mask id = vocab_size - 1
    codebook_size: int = 8192
    downsample: bool = True
    upsample: bool = True
    connector_type: str = "linear"
    text_encoder_architecture: str = "CLIP_Gemma2"
    # --- ours ---
    timestep_convention: str = "official"
    dtype: str = "float32"  # compute dtype of matmuls
    param_dtype: str = "float32"
    precision: str = "default"
    scan_layers: bool = False
    remat_policy: str = "none"
    # xla | cudnn (GPU flash attention) | auto | splash (TPU Pallas kernel; splash_interpret: the
    # same kernel in the Pallas interpreter, CPU tests only)
    attention_impl: str = "xla"
    attention_chunk: int = DEFAULT_QUERY_CHUNK  # query rows per block of logits (xla); 0: one
    # A learned margin on each position's source-token logit (token_io.SourceCopyGate); not in the
    # official model (which cannot load it), used by the embedded default model.
    source_copy: bool = False
    # Hidden width of a per-token MLP on (output features, source-token embedding) whose output
    # is added to the features before the head (token_io.SourceCellHead; 0: none). Ours, like
    # source_copy: the 2 x 2-pooled positions of a small model carry each source cell's code only
    # through the pooled state, and an edit mostly maps a cell's code to another (a recolour).
    source_head: int = 0

    def __post_init__(self):
        if not isinstance(self.source_head, int) or self.source_head < 0:
            raise ValueError(f"source_head must be an int >= 0, got {self.source_head!r}")
        object.__setattr__(self, "axes_dims_rope", tuple(int(a) for a in self.axes_dims_rope))
        if sum(self.axes_dims_rope) != self.attention_head_dim:
            raise ValueError(
                f"axes_dims_rope {self.axes_dims_rope} must sum to attention_head_dim "
                f"{self.attention_head_dim}"
            )
        if any(a % 2 for a in self.axes_dims_rope):
            raise ValueError(f"axes_dims_rope {self.axes_dims_rope} must all be even")
        for name, value, allowed in (
            ("connector_type", self.connector_type, CONNECTOR_TYPES),
            ("timestep_convention", self.timestep_convention, TIMESTEP_CONVENTIONS),
            ("remat_policy", self.remat_policy, REMAT_POLICIES),
            ("precision", self.precision, tuple(PRECISIONS)),
            ("attention_impl", self.attention_impl, ATTENTION_IMPLS),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not supported; expected one of {allowed}")
        to_dtype(self.dtype), to_dtype(self.param_dtype)
        if self.attention_chunk < 0:
            raise ValueError(
                f"attention_chunk must be >= 0 (0: unchunked), got {self.attention_chunk}"
            )
        if self.upsample != self.downsample:
            raise ValueError("downsample and upsample must be both on or both off")
        if self.vocab_size <= self.codebook_size:
            raise ValueError(
                f"vocab_size {self.vocab_size} must exceed codebook_size {self.codebook_size} "
                "(the mask id is vocab_size - 1)"
            )

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def mask_token_id(self) -> int:
        return self.vocab_size - 1

    @property
    def num_blocks(self) -> int:
        return self.num_layers + self.num_single_layers

    @property
    def token_stride(self) -> int:
        """How many input tokens per transformer position along each side."""
        return 2 if self.downsample else 1

    def replace(self, **changes: Any) -> TransformerConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any], *, official: bool = False) -> TransformerConfig:
        """Builds a config, raising on any field we do not know.

        Args:
          fields: field -> value (an ml_collections ConfigDict works too).
          official: the mapping is an official `config.json`; fields that do not affect the
            computation (patch_size, in_channels, ...) are accepted and dropped.
        """
        fields = dict(fields)
        if official:
            if fields.get("guidance_embeds"):
                raise ValueError("guidance_embeds=True checkpoints are not supported")
            if fields.get("connector_type") is None:
                fields["connector_type"] = "none"
            for name in _IGNORED_OFFICIAL_FIELDS:
                fields.pop(name, None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(
                f"Unknown transformer config field(s) {unknown}; known: {sorted(known)}"
            )
        return cls(**fields)

    def to_official_dict(self) -> dict[str, Any]:
        """The official constructor arguments (for exporting a `config.json`)."""
        if self.source_copy:
            raise ValueError(
                "source_copy=True adds a gate the official Transformer2DModel does not have; "
                "such a model cannot be exported to the official format"
            )
        if self.source_head:
            raise ValueError(
                f"source_head={self.source_head} adds a per-token head the official "
                "Transformer2DModel does not have; such a model cannot be exported to the "
                "official format"
            )
        return {
            "_class_name": "Transformer2DModel",
            "patch_size": 1,
            "in_channels": 64,  # unused by the official model; its default
            "num_layers": self.num_layers,
            "num_single_layers": self.num_single_layers,
            "attention_head_dim": self.attention_head_dim,
            "num_attention_heads": self.num_attention_heads,
            "joint_attention_dim": self.joint_attention_dim,
            "pooled_projection_dim": self.pooled_projection_dim,
            "guidance_embeds": False,
            "axes_dims_rope": list(self.axes_dims_rope),
            "vocab_size": self.vocab_size,
            "codebook_size": self.codebook_size,
            "downsample": self.downsample,
            "upsample": self.upsample,
            "text_encoder_architecture": self.text_encoder_architecture,
            "connector_type": self.connector_type,
        }
