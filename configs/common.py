"""Pieces shared by the config files."""

from __future__ import annotations

import ml_collections


def transformer(**fields) -> ml_collections.ConfigDict:
    """A transformer section with our execution defaults; `fields` are official constructor names."""
    model = ml_collections.ConfigDict(
        dict(
            timestep_convention="official",
            dtype="float32",
            param_dtype="float32",
            precision="default",
            scan_layers=False,
            remat_policy="none",
            attention_impl="xla",
        )
    )
    model.update(fields)
    return model


def mesh(data: int = -1, fsdp: int = 1, tensor: int = 1) -> ml_collections.ConfigDict:
    """Mesh axes (data, fsdp, tensor) within a slice (ICI) and across slices (DCN); one -1 allowed."""
    return ml_collections.ConfigDict(
        dict(ici_parallelism=(data, fsdp, tensor), dcn_parallelism=(1, 1, 1))
    )


def inspect_section() -> ml_collections.ConfigDict:
    """What `launch.inspect` compiles: one forward at this token grid, batch and dtype."""
    return ml_collections.ConfigDict(dict(grid=64, batch=1, text_len=256, with_source=True))


def optim(**overrides) -> ml_collections.ConfigDict:
    """The `optim` section (AdamW, see `editmgt_jax.training.optimizer`) with these overrides."""
    section = ml_collections.ConfigDict(
        dict(
            learning_rate=1e-4,
            warmup_steps=0,
            decay="constant",  # constant | cosine
            end_lr_ratio=0.0,  # cosine: final learning rate / peak
            b1=0.9,
            b2=0.99,
            eps=1e-8,
            weight_decay=0.01,
            grad_clip=1.0,  # global-norm clip; 0 disables
            accumulation_steps=1,
            # How Adam's moments are stored (bytes per parameter): float32 (8) | bfloat16 (4) |
            # int8 (2.03, blockwise codes) | factored (2, Adafactor-style v); see
            # editmgt_jax/training/low_memory_adam.py and BENCHMARKS.md.
            moments="float32",
        )
    )
    section.update(overrides)
    return section
