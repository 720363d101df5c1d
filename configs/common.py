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
