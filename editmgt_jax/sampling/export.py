"""The whole edit sampler as a portable artifact: jax.export (serialized StableHLO), fixed shapes.

`export_sampler` traces `decode` with the transformer `model_fn` (exactly as `Editor` runs it:
CFG on a [uncond; cond] batch, region-hold from the pipeline's consolidation blocks, the pipeline's
schedule, temperature and smoothing) for one (batch, grid, steps, text length) and returns a
`jax.export.Exported`. The serialized bytes hold the program only: **the transformer's parameters
are its first argument**, not constants baked in, so the file stays small (kilobytes to a few MB
even for the 1B model, which as constants would not fit a 2 GB protobuf) and one artifact serves
any weights of the same architecture and dtype. Calling convention:

    sampler(params,                          the transformer's params pytree (bundle layout)
            source_tokens   int32 [B, H, W]  the source image's VQ tokens
            text_states     f32 [B, T, D]    instruction states;  pooled f32 [B, P]
            uncond_text_states f32 [B, T, D] the empty instruction's; uncond_pooled f32 [B, P]
            micro_conds     f32 [B, 5]       width, height, crop top, crop left, aesthetic
            guidance        f32 [B]          CFG scale (CFG where > 1)
            hold_threshold  f32 [B]          lambda in [0, 1] (0: no region-hold)
            edit_mask       bool [B, H, W]   True = may change
            key_data        uint32 [B, 2]    `jax.random.key_data` of one threefry key per sample)
      -> (tokens int32 [B, H, W], hold_mask bool [B, H, W], scores f32 [B, H, W])

`save_sampler` writes the serialized bytes atomically (plus `FILE.json`, a readable description);
`load_sampler` reads them back into an `ExportedSampler`, a callable with the same arguments by
name. With the same inputs and keys it returns exactly the tokens of the jitted `decode`.

Example:
    >>> exported = export_sampler(cfg, params, pipeline, batch=1, grid=(64, 64), steps=16,
    ...                           text_len=256)  # doctest: +SKIP
    >>> save_sampler("/tmp/sampler.stablehlo", exported, {})  # doctest: +SKIP
    >>> out = load_sampler("/tmp/sampler.stablehlo")(params, **inputs)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from editmgt_jax.atomic import atomic_path
from editmgt_jax.models.transformer_config import TransformerConfig
from editmgt_jax.sampling import transformer_fn
from editmgt_jax.sampling.decode import EditInputs, decode

INPUT_NAMES = (
    "source_tokens",
    "text_states",
    "pooled",
    "uncond_text_states",
    "uncond_pooled",
    "micro_conds",
    "guidance",
    "hold_threshold",
    "edit_mask",
    "key_data",
)
OUTPUT_NAMES = ("tokens", "hold_mask", "scores")
PRNG_IMPL = "threefry2x32"  # key_data is [B, 2] uint32 of this implementation


class SamplerOutput(NamedTuple):
    """tokens int32 [B, H, W]; hold_mask bool [B, H, W]; scores float32 [B, H, W]."""

    tokens: jax.Array
    hold_mask: jax.Array
    scores: jax.Array


def default_text_length(text_encoder: Mapping[str, Any]) -> int:
    """Text positions T the bundle's text encoder produces (Gemma: 256; MiniLM: max_length)."""
    from editmgt_jax.models.text.encoder import GEMMA_MAX_LENGTH, MINILM_MAX_LENGTH

    if text_encoder.get("kind") == "clip_gemma2":
        return GEMMA_MAX_LENGTH
    return int(text_encoder.get("max_length", MINILM_MAX_LENGTH))


def sampler_settings(
    config: TransformerConfig,
    pipeline: Mapping[str, Any],
    steps: int,
    grid: tuple[int, int],
    reference_strength: float | None = None,
):
    """(model_fn, DecodeConfig, region_hold) as `Editor` builds them for a token grid (h, w).

    `region_hold` is False when the pipeline captures no block (then hold_threshold is ignored)."""
    if grid[0] % config.token_stride or grid[1] % config.token_stride:
        raise ValueError(
            f"grid {grid} must be divisible by the transformer's token stride {config.token_stride}"
        )
    strength = float(
        pipeline["reference_strength"] if reference_strength is None else reference_strength
    )
    blocks = tuple(pipeline["capture_blocks"])
    model_fn = transformer_fn.make_model_fn(config, blocks, strength, query=False)
    decode_config = transformer_fn.decode_config_for(config, pipeline, steps, grid)
    return model_fn, decode_config, bool(blocks)


def make_sampler(
    config: TransformerConfig,
    pipeline: Mapping[str, Any],
    steps: int,
    grid: tuple[int, int],
    reference_strength: float | None = None,
):
    """The pure function that `export_sampler` exports (module docstring's calling convention)."""
    model_fn, decode_config, region_hold = sampler_settings(
        config, pipeline, steps, grid, reference_strength
    )

    def sampler(
        params,
        source_tokens,
        text_states,
        pooled,
        uncond_text_states,
        uncond_pooled,
        micro_conds,
        guidance,
        hold_threshold,
        edit_mask,
        key_data,
    ):
        inputs = EditInputs(
            source_tokens=source_tokens,
            text_states=text_states,
            pooled=pooled,
            micro_conds=micro_conds,
            guidance=guidance,
            edit_mask=edit_mask,
            uncond_text_states=uncond_text_states,
            uncond_pooled=uncond_pooled,
            hold_threshold=hold_threshold if region_hold else None,
        )
        keys = jax.random.wrap_key_data(key_data, impl=PRNG_IMPL)
        state = decode(model_fn, inputs, keys, decode_config, params=params)
        return state.tokens, state.hold_mask, state.scores

    return sampler


def input_specs(
    config: TransformerConfig, batch: int, grid: tuple[int, int], text_len: int
) -> tuple[jax.ShapeDtypeStruct, ...]:
    """Shapes and dtypes of the inputs after `params`, in `INPUT_NAMES` order."""
    b, (h, w), t = int(batch), grid, int(text_len)
    d, p = config.joint_attention_dim, config.pooled_projection_dim
    f32 = jnp.float32
    shapes = dict(
        source_tokens=((b, h, w), jnp.int32),
        text_states=((b, t, d), f32),
        pooled=((b, p), f32),
        uncond_text_states=((b, t, d), f32),
        uncond_pooled=((b, p), f32),
        micro_conds=((b, 5), f32),
        guidance=((b,), f32),
        hold_threshold=((b,), f32),
        edit_mask=((b, h, w), jnp.bool_),
        key_data=((b, 2), jnp.uint32),
    )
    return tuple(jax.ShapeDtypeStruct(*shapes[name]) for name in INPUT_NAMES)


def export_sampler(
    config: TransformerConfig,
    params: Any,
    pipeline: Mapping[str, Any],
    *,
    batch: int,
    grid: tuple[int, int],
    steps: int,
    text_len: int,
    reference_strength: float | None = None,
    platforms: Sequence[str] | None = None,
) -> jax.export.Exported:
    """Exports the sampler for fixed shapes (module docstring).

    Args:
      config, params: the transformer (params give only shapes and dtypes; nothing is baked in).
      pipeline: the bundle's pipeline (capture_blocks, schedule, temperature, smoothing,
        reference_strength).
      batch, grid, steps, text_len: B, token grid (H, W), decoding steps, text positions T.
      reference_strength: overrides the pipeline's (static: it is part of the program).
      platforms: e.g. ("cpu", "cuda", "tpu"); default: the current backend only.
    """
    sampler = make_sampler(config, pipeline, steps, grid, reference_strength)
    params_spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), params)
    exporter = jax.export.export(
        jax.jit(sampler), platforms=None if platforms is None else tuple(platforms)
    )
    return exporter(params_spec, *input_specs(config, batch, grid, text_len))


def describe(exported: jax.export.Exported, **info: Any) -> dict[str, Any]:
    """A JSON-able description of an exported sampler (inputs/outputs by name, plus `info`)."""
    avals = exported.in_avals[-len(INPUT_NAMES) :]
    return dict(
        format="editmgt-jax-sampler",
        calling_convention_version=exported.calling_convention_version,
        platforms=list(exported.platforms),
        params_leaves=len(exported.in_avals) - len(INPUT_NAMES),
        inputs={
            n: dict(shape=list(a.shape), dtype=str(a.dtype))
            for n, a in zip(INPUT_NAMES, avals, strict=True)
        },
        outputs={
            n: dict(shape=list(a.shape), dtype=str(a.dtype))
            for n, a in zip(OUTPUT_NAMES, exported.out_avals, strict=True)
        },
        prng_impl=PRNG_IMPL,
        **info,
    )


def save_sampler(path: str, exported: jax.export.Exported, info: Mapping[str, Any]) -> int:
    """Writes the serialized sampler to `path` and its description to `path + ".json"`, each
    atomically; returns the size in bytes of `path`."""
    data = bytes(exported.serialize())
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    with atomic_path(path + ".json") as tmp, open(tmp, "w") as f:
        json.dump(describe(exported, **info), f, indent=2, sort_keys=True)
    return len(data)


class ExportedSampler:
    """A deserialized sampler: `__call__(params, **inputs) -> SamplerOutput` (module docstring).

    Inputs are cast to the exported dtypes and their shapes checked (an error names the input);
    `keys` may be given instead of `key_data` as [B] typed keys.
    """

    def __init__(self, exported: jax.export.Exported):
        self.exported = exported
        self.input_avals = dict(
            zip(INPUT_NAMES, exported.in_avals[-len(INPUT_NAMES) :], strict=True)
        )

    @property
    def batch(self) -> int:
        return int(self.input_avals["source_tokens"].shape[0])

    def __call__(self, params: Any, *, keys: jax.Array | None = None, **inputs: Any):
        if keys is not None:
            if "key_data" in inputs:
                raise ValueError("Give keys or key_data, not both")
            inputs["key_data"] = jax.random.key_data(keys)
        missing = [n for n in INPUT_NAMES if n not in inputs]
        unknown = sorted(set(inputs) - set(INPUT_NAMES))
        if missing or unknown:
            raise ValueError(f"Sampler inputs: missing {missing}, unknown {unknown}")
        args = []
        for name in INPUT_NAMES:
            aval = self.input_avals[name]
            value = jnp.asarray(inputs[name], aval.dtype)
            if value.shape != aval.shape:
                raise ValueError(
                    f"Sampler input {name} has shape {value.shape}; this artifact was exported "
                    f"for {aval.shape}"
                )
            args.append(value)
        return SamplerOutput(*self.exported.call(params, *args))


def export_bundle_sampler(
    checkpoint: str,
    path: str,
    *,
    grid: tuple[int, int],
    batch: int = 1,
    steps: int | None = None,
    text_len: int | None = None,
    reference_strength: float | None = None,
    platforms: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Exports the sampler of the bundle `checkpoint` to `path` (`launch.export --stablehlo`).

    Defaults: the bundle's steps and reference_strength, its text encoder's length. Returns a
    report (file, bytes, shapes)."""
    from editmgt_jax.checkpoint.bundle import load_bundle

    bundle = load_bundle(checkpoint)
    steps = int(steps or bundle.pipeline["steps"])
    text_len = int(text_len or default_text_length(bundle.text_encoder))
    exported = export_sampler(
        bundle.transformer_config,
        bundle.transformer_params,
        bundle.pipeline,
        batch=batch,
        grid=grid,
        steps=steps,
        text_len=text_len,
        reference_strength=reference_strength,
        platforms=platforms,
    )
    info = dict(
        checkpoint=bundle.path,
        grid=list(grid),
        batch=int(batch),
        steps=steps,
        text_len=text_len,
        reference_strength=float(
            bundle.pipeline["reference_strength"]
            if reference_strength is None
            else reference_strength
        ),
        params="argument 0: the bundle's transformer params (load_bundle(...).transformer_params)",
    )
    size = save_sampler(path, exported, info)
    return dict(file=os.path.abspath(path), bytes=size, platforms=list(exported.platforms), **info)


def load_sampler(path: str) -> ExportedSampler:
    """Deserializes a file written by `save_sampler` (or `launch.export --stablehlo`)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Exported sampler {path!r} does not exist")
    with open(path, "rb") as f:
        data = bytearray(f.read())
    try:
        exported = jax.export.deserialize(data)
    except Exception as e:  # flatbuffer / version errors have various types
        raise ValueError(f"{path} is not a serialized jax.export artifact: {e}") from e
    return ExportedSampler(exported)
