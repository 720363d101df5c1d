"""A training config whose architecture comes from the checkpoint it starts from.

`configs/editmgt_crispedit.py` (the released model's fine-tuning recipe) leaves the transformer's
architecture fields as placeholders (None), its `pipeline` section and `vq` section empty: with
`init_from` set to a bundle, `resolve_config` fills them from that bundle, so one command trains
a miniature converted folder in the tests and the real release on a pod. A field the user did
set (e.g. `--config.model.num_layers=14`) must agree with the bundle; a contradiction is an error
naming both values. Without `init_from`, or with `init_partial` (starting the EditMGT structure
from Meissonic's weights, as the official training script does: whatever fits is loaded), the
placeholders take the released model's values
(`TransformerConfig`'s defaults), which is what `launch.inspect` and `launch.aot` compile.

Configs that set every architecture field themselves (`configs/smoke.py`, `configs/default.py`)
pass through unchanged.

Example:
    >>> from configs import editmgt_crispedit
    >>> config = resolve_config(editmgt_crispedit.get_config())  # no init_from: the release
    >>> config.model.num_layers, config.model.joint_attention_dim
    (14, 2304)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import ml_collections

from editmgt_jax.models.transformer_config import TransformerConfig

# Fields that fix the transformer's parameters or its inputs' meaning: a bundle decides them.
ARCHITECTURE_FIELDS = (
    "num_layers",
    "num_single_layers",
    "num_attention_heads",
    "attention_head_dim",
    "joint_attention_dim",
    "pooled_projection_dim",
    "axes_dims_rope",
    "vocab_size",
    "codebook_size",
    "downsample",
    "upsample",
    "connector_type",
    "text_encoder_architecture",
    "timestep_convention",
)
# What the released model has where a config leaves a field to its bundle and has none.
RELEASED = {
    f: _v for f, _v in dataclasses.asdict(TransformerConfig()).items() if f in ARCHITECTURE_FIELDS
}
# text_encoder_architecture -> the text encoder kind that feeds it.
TEXT_KIND_OF_ARCHITECTURE = {"CLIP_Gemma2": "clip_gemma2", "CLIP": "clip", "MiniLM": "minilm"}


def _normal(value: Any) -> Any:
    return tuple(value) if isinstance(value, list | tuple) else value


def _source_fields(init_from: str) -> tuple[dict[str, Any], dict[str, Any] | None, str]:
    """(transformer fields, bundle pipeline or None, what) of the checkpoint at `init_from`."""
    from editmgt_jax.checkpoint.bundle import is_bundle, read_manifest

    if is_bundle(init_from):
        manifest = read_manifest(init_from)
        return manifest["transformer"], manifest["pipeline"], f"the init_from bundle {init_from!r}"
    if os.path.isdir(init_from):
        from editmgt_jax.checkpoint.convert.from_torch import read_transformer_config

        cfg = read_transformer_config(init_from)
        return dataclasses.asdict(cfg), None, f"the init_from folder {init_from!r}"
    raise FileNotFoundError(
        f"init_from={init_from!r} is neither a bundle (bundle.json) nor an official folder"
    )


def uses_placeholders(config: ml_collections.ConfigDict) -> bool:
    """True when the config leaves architecture fields to its checkpoint (None values)."""
    return any(config.model.get(f, 0) is None for f in ARCHITECTURE_FIELDS)


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `config` with the placeholders filled (module docstring).

    Raises:
      ValueError: a field set in the config contradicts the bundle (every such field listed with
        both values), or the text encoder kind does not fit the architecture.
    """
    if not uses_placeholders(config):
        return config
    config = ml_collections.ConfigDict(config.to_dict())  # unlocked, FieldReferences resolved
    from_checkpoint = bool(config.get("init_from")) and not config.get("init_partial")
    if from_checkpoint:
        source, pipeline, what = _source_fields(config.init_from)
    else:  # a fresh or partly loaded model: the user's fields, else the release's
        source, pipeline, what = RELEASED, None, "the released model"
    contradictions = {}
    for field in ARCHITECTURE_FIELDS:
        have, want = config.model.get(field), source.get(field, RELEASED[field])
        if have is None:
            config.model[field] = _normal(want)
        elif from_checkpoint and _normal(have) != _normal(want):
            contradictions[field] = (have, _normal(want))
    if contradictions:
        listed = "; ".join(
            f"model.{f}={have!r} but {what} has {want!r}"
            for f, (have, want) in contradictions.items()
        )
        raise ValueError(
            f"The config contradicts its checkpoint: {listed}. Drop the override(s): with "
            "init_from the transformer's architecture comes from the checkpoint."
        )
    kind = TEXT_KIND_OF_ARCHITECTURE.get(config.model.text_encoder_architecture)
    if kind is not None and config.text_encoder.kind != kind:
        raise ValueError(
            f"text_encoder.kind={config.text_encoder.kind!r} does not feed a "
            f"{config.model.text_encoder_architecture} transformer ({what}); expected {kind!r}"
        )
    if not config.get("pipeline"):
        config.pipeline = default_pipeline(config, pipeline)
    return ml_collections.ConfigDict(config.to_dict())


def default_pipeline(
    config: ml_collections.ConfigDict, bundle_pipeline: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The pipeline a config that leaves it empty gets, at `config.image_size`: its bundle's, else
    the release's for its transformer (`folder.released_pipeline`; placeholder fields read as the
    released model's)."""
    from editmgt_jax.checkpoint.folder import released_pipeline

    if bundle_pipeline:
        pipeline = dict(bundle_pipeline)
    else:
        fields = {
            k: RELEASED[k] if v is None and k in RELEASED else v
            for k, v in config.model.to_dict().items()
        }
        pipeline = released_pipeline(TransformerConfig.from_dict(fields))
    pipeline["resolution"] = config.image_size
    return pipeline
