"""Writes a randomly initialised checkpoint bundle (transformer + VQ + text encoder spec + pipeline).

    python -m launch.init_checkpoint --config configs/smoke.py --out /tmp/smoke_bundle
    python -m launch.init_checkpoint --config configs/small_40m.py --out /tmp/small_bundle

The bundle's metadata says `random_init: true` and holds the whole config, so nobody mistakes it
for a trained model; it is for smoke runs, tests and benchmarks. Sections taken from the config:
`model` (required), `vq`, `text_encoder`, `pipeline`, `seed`. Configs without `vq` /
`text_encoder` / `pipeline` (e.g. official_tiny, small_40m) get defaults:

- text encoder: MiniLM (the only one buildable offline) when the transformer's text widths are 384;
  otherwise an error naming the widths (CLIP_Gemma2 models need a converted official folder).
- VQ: `DEFAULT_VQ` (stride 8) with `codebook_size` codes.
- pipeline: `DEFAULT_PIPELINE` with a 32-token side (`resolution` = 32 x VQ stride x token stride)
  and the middle single-stream block captured for region-hold.

Prints one JSON line: out, transformer_params, vq_params, seconds.
"""

from __future__ import annotations

import json
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from absl import app, flags
from ml_collections import config_flags

from editmgt_jax.checkpoint.bundle import DEFAULT_PIPELINE, Bundle, save_bundle
from editmgt_jax.models.text.encoder import MINILM_MAX_LENGTH
from editmgt_jax.models.transformer import Transformer, example_inputs
from editmgt_jax.models.transformer_config import TransformerConfig
from editmgt_jax.models.vq import VQConfig, VQModel
from launch import cli

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the flags (only when run as a script: importing this module defines none)."""
    config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
    flags.DEFINE_string("out", None, "Folder of the bundle to write.", required=True)
    flags.DEFINE_bool("overwrite", False, "Replace an existing bundle at --out.")


MINILM_WIDTH = 384  # all-MiniLM-L6-v2 states and pooled width
# A small stride-8 VQ for configs without a `vq` section (codebook size from the transformer).
DEFAULT_VQ = dict(
    block_out_channels=(32, 64, 64, 128),
    layers_per_block=1,
    norm_num_groups=8,
    latent_channels=16,
    mid_block_add_attention=False,
)
DEFAULT_GRID = 32  # tokens per side of the default resolution


def _section(config: ml_collections.ConfigDict, name: str) -> dict[str, Any] | None:
    if name not in config:
        return None
    return json.loads(config[name].to_json())


def text_encoder_spec(config: ml_collections.ConfigDict, cfg: TransformerConfig) -> dict[str, Any]:
    """The bundle's text encoder spec: the config's `text_encoder` section, or MiniLM if it fits."""
    spec = _section(config, "text_encoder")
    if spec is None:
        if cfg.joint_attention_dim != MINILM_WIDTH or cfg.pooled_projection_dim != MINILM_WIDTH:
            raise ValueError(
                f"The config has no text_encoder section, and its transformer's text widths "
                f"(joint_attention_dim={cfg.joint_attention_dim}, "
                f"pooled_projection_dim={cfg.pooled_projection_dim}) fit no encoder that can be "
                f"built offline (MiniLM: {MINILM_WIDTH}, {MINILM_WIDTH}). Add a text_encoder "
                "section, or convert an official folder with launch.convert."
            )
        spec = dict(kind="minilm", max_length=MINILM_MAX_LENGTH)
    if spec.get("kind") == "minilm" and (
        cfg.joint_attention_dim != MINILM_WIDTH or cfg.pooled_projection_dim != MINILM_WIDTH
    ):
        raise ValueError(
            f"text_encoder kind 'minilm' gives widths {MINILM_WIDTH}; the transformer expects "
            f"{cfg.joint_attention_dim} (states) and {cfg.pooled_projection_dim} (pooled)"
        )
    return spec


def vq_config(config: ml_collections.ConfigDict, cfg: TransformerConfig) -> VQConfig:
    """The config's `vq` section, or `DEFAULT_VQ` with the transformer's codebook size."""
    fields = _section(config, "vq")
    if fields is None:
        fields = dict(DEFAULT_VQ, num_vq_embeddings=cfg.codebook_size)
    vq = VQConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    if vq.num_vq_embeddings != cfg.codebook_size:
        raise ValueError(
            f"The VQ has {vq.num_vq_embeddings} codes but the transformer predicts "
            f"codebook_size={cfg.codebook_size}"
        )
    return vq


def pipeline_defaults(
    config: ml_collections.ConfigDict, cfg: TransformerConfig, vq: VQConfig
) -> dict[str, Any]:
    """The config's `pipeline` section, or defaults sized for this model."""
    pipeline = _section(config, "pipeline")
    if pipeline is None:
        pipeline = dict(
            DEFAULT_PIPELINE,
            resolution=DEFAULT_GRID * vq.stride * cfg.token_stride,
            capture_blocks=[cfg.num_layers + cfg.num_single_layers // 2],
        )
    bad = [b for b in pipeline.get("capture_blocks", []) if not 0 <= b < cfg.num_blocks]
    if bad:
        raise ValueError(
            f"pipeline.capture_blocks {bad} are outside [0, {cfg.num_blocks}) for this transformer"
        )
    return pipeline


def random_bundle(config: ml_collections.ConfigDict, seed: int | None = None) -> Bundle:
    """A randomly initialised `Bundle` of `config` (see the module docstring for defaults)."""
    if "model" not in config:
        raise ValueError("The config has no `model` section (the transformer)")
    seed = int(config.get("seed", 0) if seed is None else seed)
    cfg = TransformerConfig.from_dict(config.model)
    text_spec = text_encoder_spec(config, cfg)
    vq = vq_config(config, cfg)
    pipeline = pipeline_defaults(config, cfg, vq)

    # The rbg PRNG: XLA compiles the many initializers several times faster than with threefry
    # (minutes vs seconds on a loaded CPU); the bundle is reproducible on one backend.
    key_t, key_v = jax.random.split(jax.random.key(seed, impl="rbg"))
    side = 2 * cfg.token_stride
    inputs = example_inputs(cfg, batch=1, grid=(side, side), text_len=4)
    images = jnp.zeros((1, side * vq.stride, side * vq.stride, vq.in_channels), jnp.float32)
    # Jitted: one compile is much faster than dispatching every init op eagerly.
    transformer = jax.jit(lambda k, x: Transformer(cfg).init(k, **x)["params"])(key_t, inputs)
    vq_params = jax.jit(lambda k, x: VQModel(vq).init(k, x)["params"])(key_v, images)
    transformer, vq_params = nn.meta.unbox(transformer), nn.meta.unbox(vq_params)
    metadata = dict(
        random_init=True,
        note="Randomly initialised weights (launch.init_checkpoint); edits are noise.",
        seed=seed,
        config=json.loads(config.to_json()),
        created_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    return Bundle(
        transformer_config=cfg,
        transformer_params=transformer,
        vq_config=vq.to_diffusers(),
        vq_params=vq_params,
        text_encoder=text_spec,
        pipeline=pipeline,
        metadata=metadata,
    )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.config is None:
        raise app.UsageError("--config is required, e.g. --config configs/smoke.py")
    start = time.perf_counter()
    try:
        bundle = random_bundle(FLAGS.config)
        path = save_bundle(FLAGS.out, bundle, overwrite=FLAGS.overwrite)
    except (ValueError, FileExistsError) as e:
        raise app.UsageError(str(e)) from e
    count = lambda tree: int(sum(x.size for x in jax.tree.leaves(tree)))
    report = dict(
        out=path,
        random_init=True,
        transformer_params=count(bundle.transformer_params),
        vq_params=count(bundle.vq_params),
        seconds=round(time.perf_counter() - start, 2),
    )
    print(json.dumps(report))


def run():
    """The console script (pyproject.toml): the same absl main as `python -m`."""
    define_flags()
    cli.run_main(main)


if __name__ == "__main__":
    run()
