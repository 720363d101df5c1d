"""Shapes, bad inputs and the released configuration's size."""

import jax
import jax.numpy as jnp
import pytest

from configs import editmgt_1b, official_tiny
from editmgt_jax.models.transformer import Transformer, TransformerConfig, example_inputs
from editmgt_jax.models.transformer_stats import count_params

TINY = TransformerConfig.from_dict(official_tiny.get_config().model)


@pytest.fixture(scope="module")
def tiny_params(tiny_checkpoint):
    """Parameters of the TINY architecture: the session's converted official_tiny weights (no
    init to compile; the tests below need valid weights of this shape, not particular ones)."""
    cfg, params = tiny_checkpoint
    assert cfg.replace(timestep_convention=TINY.timestep_convention) == TINY
    return params


def _jit_apply(**options):
    """Transformer(TINY).apply, jitted (eager Flax dispatches every op on its own)."""
    return jax.jit(lambda p, x: Transformer(TINY).apply({"params": p}, **x, **options))


def test_released_config_has_the_official_parameter_count():
    cfg = TransformerConfig.from_dict(editmgt_1b.get_config().model)
    assert count_params(cfg) == 1_009_306_624


def test_rectangular_grid_and_no_source(tiny_params):
    inputs = example_inputs(TINY, batch=2, grid=(8, 12), text_len=5, with_source=False)
    logits = _jit_apply()(tiny_params, inputs)
    assert logits.shape == (2, 8, 12, TINY.codebook_size) and logits.dtype == jnp.float32
    weights = jnp.ones((2, 5)).at[:, 3:].set(0.0)
    _, scores = _jit_apply(capture_blocks=(0, 3), capture_reduce=True)(
        tiny_params, dict(inputs, capture_text_weights=weights)
    )
    assert scores.shape == (2, 4 * 6)


def test_rectangular_grid_is_not_a_transposed_square(tiny_params):
    # Rows and columns get their own RoPE axis: a transposed input gives different logits.
    inputs = example_inputs(TINY, batch=1, grid=(8, 12), text_len=5)
    t = dict(inputs, tokens=inputs["tokens"].transpose(0, 2, 1))
    t["source_tokens"] = inputs["source_tokens"].transpose(0, 2, 1)
    apply = _jit_apply()
    a = apply(tiny_params, inputs)
    b = apply(tiny_params, t).transpose(0, 2, 1, 3)
    assert float(jnp.abs(a - b).max()) > 1e-3


def _bad(tiny_params, match, **changes):
    inputs = example_inputs(TINY, batch=2, grid=(8, 8), text_len=4)
    inputs.update(changes)
    with pytest.raises(ValueError, match=match):
        Transformer(TINY).apply({"params": tiny_params}, **inputs)


def test_bad_inputs(tiny_params):
    _bad(tiny_params, "must be integers", tokens=jnp.zeros((2, 8, 8), jnp.float32))
    too_big = jnp.full((2, 8, 8), 128, jnp.int32)
    _bad(tiny_params, r"values span \[128, 128\], expected ids in \[0, 127\]", tokens=too_big)
    _bad(tiny_params, "values span", source_tokens=jnp.full((2, 8, 8), -1, jnp.int32))
    _bad(tiny_params, r"text_states has shape \(3, 4, 48\)", text_states=jnp.zeros((3, 4, 48)))
    _bad(tiny_params, r"pooled has shape \(2, 31\)", pooled=jnp.zeros((2, 31)))
    _bad(tiny_params, "source_tokens has shape", source_tokens=jnp.zeros((2, 8, 6), jnp.int32))
    _bad(
        tiny_params,
        "not divisible by the downsample factor 2",
        tokens=jnp.zeros((2, 7, 8), jnp.int32),
        source_tokens=jnp.zeros((2, 7, 8), jnp.int32),
    )
    _bad(tiny_params, "timestep must be", timestep=jnp.zeros((3,)))
    _bad(tiny_params, "tokens must be", tokens=jnp.zeros((2, 64), jnp.int32))
    with pytest.raises(ValueError, match="capture block 4 out of range"):
        Transformer(TINY).apply(
            {"params": tiny_params},
            **example_inputs(TINY, batch=1, grid=(8, 8), text_len=4),
            capture_blocks=(4,),
        )


def test_config_validation():
    with pytest.raises(ValueError, match="Unknown transformer config field"):
        TransformerConfig.from_dict({"num_layers": 2, "heads": 4})
    with pytest.raises(ValueError, match="must sum to attention_head_dim"):
        TINY.replace(axes_dims_rope=(4, 6, 8))
    with pytest.raises(ValueError, match="timestep_convention"):
        TINY.replace(timestep_convention="seconds")
    with pytest.raises(ValueError, match="Unknown dtype"):
        TINY.replace(dtype="float8")


def test_jit_compiles_once_per_shape(tiny_params):
    inputs = example_inputs(TINY, batch=1, grid=(8, 8), text_len=4)
    apply = jax.jit(lambda p, x: Transformer(TINY).apply({"params": p}, **x))
    apply(tiny_params, inputs)
    apply(tiny_params, example_inputs(TINY, batch=1, grid=(8, 8), text_len=4, seed=1))
    assert apply._cache_size() == 1
