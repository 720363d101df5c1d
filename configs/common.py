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


def train(**overrides) -> ml_collections.ConfigDict:
    """The `train` section (what `launch.train` reads; configs/smoke.py's values) with these
    overrides."""
    section = ml_collections.ConfigDict(
        dict(
            steps=24,
            batch_size=8,
            min_mask_ratio=0.1,
            cond_dropout=0.1,
            ema_decay=0.99,
            log_every=4,
            checkpoint_every=12,
            keep_checkpoints=2,
            max_consecutive_nonfinite=5,
            stop_after_steps=-1,  # > 0: save and exit after this step, as a preemption would
            export_bundle=True,  # at the end: <workdir>/bundle (EMA weights) for launch.edit
            sample_every=0,  # > 0: edit `sample_count` held-out examples into samples/ this often
            sample_count=4,
            # Edit-focused training (editmgt_jax/training/step.py StepOptions); off here.
            changed_loss_weight=1.0,
            changed_loss_per_example=False,
            changed_mask_rate=0.0,
            attention_loss_weight=0.0,
            attention_loss_blocks=(),
            attention_max_fraction=0.5,
            init_tables_from_codebook=False,
            # > 0: log the held-out probe (editmgt_jax/training/probe.py) this often.
            probe_every=0,
            probe_count=14,
            probe_seed=31337,
        )
    )
    section.update(overrides)
    return section
