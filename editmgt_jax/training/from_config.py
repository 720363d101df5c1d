"""What a training config means for the step: the pieces `launch.train` and `launch.aot` share.

`launch.aot` compiles the programs `launch.train` runs; both take the step's options, the LoRA
section, whether an EMA is kept and the config checks from here, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections

from editmgt_jax.models.transformer_config import TransformerConfig
from editmgt_jax.training.step import StepOptions


def lora_section(config: ml_collections.ConfigDict) -> Any:
    """The `lora` section when LoRA is on (rank > 0), else None."""
    lora = config.get("lora")
    return lora if lora is not None and lora.rank > 0 else None


def use_ema(config: ml_collections.ConfigDict) -> bool:
    """Whether the state keeps an EMA: `train.ema_decay` 0 keeps none (the released model's
    recipe), which saves a copy of the trained weights."""
    return float(config.train.ema_decay) > 0


def validate(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> None:
    """Errors that must come before any compute."""
    data_parallel = mesh.shape["data"] * mesh.shape["fsdp"]
    batch = config.train.batch_size
    if batch % data_parallel:
        raise ValueError(
            f"train.batch_size={batch} is not divisible by the data-parallel size {data_parallel} "
            f"(mesh data x fsdp = {mesh.shape['data']} x {mesh.shape['fsdp']})"
        )
    if batch % jax.process_count():
        raise ValueError(
            f"train.batch_size={batch} must divide by the {jax.process_count()} processes"
        )
    if config.train.steps < 1:
        raise ValueError(f"train.steps={config.train.steps}; expected >= 1")


def validate_grid(config: ml_collections.ConfigDict, vq_stride: int, token_stride: int) -> int:
    """The token grid side of `config.image_size`; an error when the size does not fit it."""
    cell = vq_stride * token_stride
    if config.image_size % cell:
        raise ValueError(
            f"image_size={config.image_size} must be a multiple of {cell} (the VQ's stride "
            f"{vq_stride} x the transformer's downsample {token_stride})"
        )
    return config.image_size // vq_stride


def step_options(config, model_cfg: TransformerConfig, lora) -> StepOptions:
    """The train step's options from the config's `train` section."""
    train = config.train
    return StepOptions(
        mask_id=model_cfg.mask_token_id,
        min_mask_ratio=train.min_mask_ratio,
        cond_dropout=train.cond_dropout,
        ema_decay=train.ema_decay,
        timestep_convention=model_cfg.timestep_convention,
        lora_scale=config.lora.alpha / config.lora.rank if lora is not None else 0.0,
        changed_loss_weight=train.changed_loss_weight,
        changed_loss_per_example=train.changed_loss_per_example,
        changed_mask_rate=train.changed_mask_rate,
        attention_loss_weight=train.attention_loss_weight,
        attention_blocks=tuple(train.attention_loss_blocks),
        attention_max_fraction=train.attention_max_fraction,
        token_stride=model_cfg.token_stride,
    )
