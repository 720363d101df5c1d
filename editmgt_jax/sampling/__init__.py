"""Edit sampling: mask schedules, attention localization and the jitted parallel decoder.

from editmgt_jax.sampling import DecodeConfig, decode, make_inputs
"""

from editmgt_jax.sampling.decode import DecodeConfig, DecodeState, EditInputs, decode, make_inputs
from editmgt_jax.sampling.localization import (
    consolidate_attention,
    query_weights,
    region_scores,
    rescale_scores,
    resize_scores,
    smooth_scores,
    text_mean,
)
from editmgt_jax.sampling.schedule import (
    mask_len,
    mask_ratio,
    masked_counts,
    temperatures,
    timestep,
)

__all__ = [
    "DecodeConfig",
    "DecodeState",
    "EditInputs",
    "consolidate_attention",
    "decode",
    "make_inputs",
    "mask_len",
    "mask_ratio",
    "masked_counts",
    "query_weights",
    "region_scores",
    "rescale_scores",
    "resize_scores",
    "smooth_scores",
    "temperatures",
    "text_mean",
    "timestep",
]
