"""Size and compiled memory of a transformer, from abstract shapes (nothing is allocated)."""

from __future__ import annotations

import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from editmgt_jax.models.transformer import Transformer, example_inputs
from editmgt_jax.models.transformer_config import TransformerConfig


def abstract_params(cfg: TransformerConfig, inputs=None):
    """ShapeDtypeStructs of the params (no allocation)."""
    inputs = inputs or example_inputs(cfg, batch=1, grid=(4, 4), text_len=4)
    boxed = jax.eval_shape(lambda: Transformer(cfg).init(jax.random.key(0), **inputs)["params"])
    return nn.meta.unbox(boxed)


def count_params(cfg: TransformerConfig) -> int:
    return sum(x.size for x in jax.tree.leaves(abstract_params(cfg)))


def forward_memory(cfg: TransformerConfig, grid: int, batch: int, text_len: int, with_source: bool):
    """Compiles one forward for these shapes; returns (memory stats dict, compile seconds)."""
    inputs = example_inputs(cfg, batch=1, grid=(4, 4), text_len=4, with_source=with_source)
    params = abstract_params(cfg, inputs)
    dtype = jnp.dtype(cfg.param_dtype)
    params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, dtype), params)
    specs = dict(
        tokens=jax.ShapeDtypeStruct((batch, grid, grid), jnp.int32),
        text_states=jax.ShapeDtypeStruct((batch, text_len, cfg.joint_attention_dim), jnp.float32),
        pooled=jax.ShapeDtypeStruct((batch, cfg.pooled_projection_dim), jnp.float32),
        micro_conds=jax.ShapeDtypeStruct((batch, 5), jnp.float32),
        timestep=jax.ShapeDtypeStruct((batch,), jnp.float32),
    )
    if with_source:
        specs["source_tokens"] = jax.ShapeDtypeStruct((batch, grid, grid), jnp.int32)
    forward = jax.jit(lambda p, x: Transformer(cfg).apply({"params": p}, **x))
    start = time.perf_counter()
    compiled = forward.lower(params, specs).compile()
    seconds = time.perf_counter() - start
    analysis = compiled.memory_analysis()
    fields = (
        "argument_size_in_bytes",
        "output_size_in_bytes",
        "temp_size_in_bytes",
        "generated_code_size_in_bytes",
        "alias_size_in_bytes",
    )
    stats = {f: int(getattr(analysis, f)) for f in fields if hasattr(analysis, f)}
    return stats, seconds
