"""Unit tests of the VQ tokenizer: shapes, bad inputs, jit, the training forward pass."""

from __future__ import annotations

import doctest

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from editmgt_jax.models import vq as vq_module
from editmgt_jax.models.vq import (
    PatchDiscriminator,
    VQConfig,
    VQModel,
    lookup_codes,
    nearest_code,
    straight_through,
)

CONFIG = VQConfig(
    block_out_channels=(8, 16, 16),
    layers_per_block=1,
    norm_num_groups=4,
    latent_channels=4,
    num_vq_embeddings=16,
)


def _jit(model, method, **kwargs):
    """model.apply with `method`, jitted: eager Flax on CPU compiles op by op and is slow."""
    return jax.jit(lambda p, x: model.apply({"params": p}, x, method=method, **kwargs))


def _random_params(module, sample, seed=0):
    """Random parameters of the right shapes, drawn with NumPy.

    `jax.jit(module.init)` would do, but XLA:CPU takes a minute to compile the threefry draws of
    every parameter; the forward passes under test do not care how the weights were drawn.
    """
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(module.init, jax.random.key(0), sample)["params"]

    def draw(leaf):
        fan_in = int(np.prod(leaf.shape[:-1])) or 1
        return jnp.asarray(rng.normal(0, 1 / np.sqrt(fan_in), leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map(draw, shapes)


@pytest.fixture(scope="module")
def model_and_params():
    model = VQModel(CONFIG)
    return model, _random_params(model, jnp.zeros((1, 8, 8, 3)))


def _images(shape, seed=0):
    return jax.random.uniform(jax.random.key(seed), shape)


def test_stride_and_config_round_trip():
    assert CONFIG.stride == 4
    assert VQConfig.from_diffusers(CONFIG.to_diffusers()) == CONFIG
    assert VQConfig().stride == 16  # the released layout: 16 pixels per token


def _round_trip(model):
    """One jitted function for encode, encode_to_ids and decode_ids (one compile per shape)."""

    def run(params, images):
        variables = {"params": params}
        ids = model.apply(variables, images, method=model.encode_to_ids)
        latents = model.apply(variables, images, method=model.encode)
        return ids, latents, model.apply(variables, ids, method=model.decode_ids)

    return jax.jit(run)


@pytest.mark.parametrize("height,width", [(8, 8), (4, 12)])
def test_shapes_and_dtypes(model_and_params, height, width):
    model, params = model_and_params
    ids, latents, decoded = _round_trip(model)(params, _images((3, height, width, 3)))
    assert ids.shape == (3, height // 4, width // 4) and ids.dtype == jnp.int32
    assert int(ids.min()) >= 0 and int(ids.max()) < CONFIG.num_vq_embeddings
    assert latents.shape == (3, height // 4, width // 4, CONFIG.embed_dim)
    assert decoded.shape == (3, height, width, 3) and decoded.dtype == jnp.float32
    assert float(decoded.min()) >= 0 and float(decoded.max()) <= 1


def test_batch_elements_are_independent(model_and_params):
    model, params = model_and_params
    images = _images((3, 8, 16, 3), seed=1)
    encode = _jit(model, model.encode_to_ids)
    together, alone = encode(params, images), encode(params, images[1:2])
    assert bool((together[0] != together[1]).any())  # different images, different tokens
    np.testing.assert_array_equal(np.asarray(together[1:2]), np.asarray(alone))


def test_submodules_are_named():
    model = VQModel(CONFIG)
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 4, 4, 3)))["params"]
    assert set(params) == {"encoder", "quant_conv", "codebook", "post_quant_conv", "decoder"}
    paths = jax.tree_util.tree_flatten_with_path(params)[0]
    names = ["/".join(str(k.key) for k in path) for path, _ in paths]
    assert not [n for n in names if "_0/" in n and ("Dense_" in n or "Conv_" in n)]
    assert "encoder/down_1_resnet_0/conv_shortcut/kernel" in names


def test_nearest_code_and_lookup():
    codebook = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    latents = jnp.array([[[0.9, 0.1], [0.1, 1.8]], [[0.0, -0.1], [5.0, 0.0]]])[None]
    ids = nearest_code(latents, codebook)
    np.testing.assert_array_equal(np.asarray(ids), [[[1, 2], [0, 1]]])
    np.testing.assert_array_equal(np.asarray(lookup_codes(ids, codebook))[0, 0, 1], [0.0, 2.0])
    assert np.isnan(np.asarray(lookup_codes(jnp.array([3]), codebook))).all()  # never clamped


def test_straight_through_gradient():
    z = jnp.array([0.3, -1.2])
    q = jnp.array([0.0, -1.0])
    np.testing.assert_allclose(np.asarray(straight_through(z, q)), np.asarray(q), atol=1e-7)
    grad = jax.grad(lambda z: jnp.sum(3.0 * straight_through(z, q)))(z)
    np.testing.assert_allclose(np.asarray(grad), [3.0, 3.0])


def test_training_forward_and_gradients():
    # One level (stride 1) keeps the gradient compile short.
    model = VQModel(
        VQConfig(block_out_channels=(8,), layers_per_block=1, norm_num_groups=4,
                 latent_channels=4, num_vq_embeddings=16)
    )  # fmt: skip
    images = _images((2, 2, 2, 3), seed=2)
    params = _random_params(model, images)

    def loss_fn(p):
        recon, aux = model.apply({"params": p}, images)
        return jnp.mean((recon - images) ** 2) + aux["codebook_loss"] + aux["commitment_loss"], aux

    (loss, aux), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
    assert np.isfinite(float(loss))
    assert aux["ids"].shape == (2, 2, 2) and aux["latents"].shape == (2, 2, 2, 4)
    # The reconstruction loss reaches the encoder through the straight-through estimator, and the
    # codebook loss reaches the codebook.
    assert float(jnp.abs(grads["encoder"]["conv_in"]["kernel"]).sum()) > 0
    assert float(jnp.abs(grads["codebook"]["embedding"]).sum()) > 0


def test_jit_compiles_once_per_shape(model_and_params):
    model, params = model_and_params

    @jax.jit
    @chex.assert_max_traces(n=1)
    def encode(p, x):
        return model.apply({"params": p}, x, method=model.encode_to_ids)

    images = _images((2, 8, 8, 3), seed=3)
    eager = model.apply({"params": params}, images, method=model.encode_to_ids)
    np.testing.assert_array_equal(np.asarray(encode(params, images)), np.asarray(eager))
    encode(params, _images((2, 8, 8, 3), seed=4))  # same shape: no retrace


def test_bf16_compute(model_and_params):
    _, params = model_and_params
    model = VQModel(CONFIG, dtype=jnp.bfloat16)
    ids, latents, decoded = _round_trip(model)(params, _images((1, 8, 8, 3)))
    assert ids.dtype == jnp.int32 and latents.dtype == jnp.bfloat16
    assert decoded.dtype == jnp.float32 and bool(jnp.isfinite(decoded).all())


# --------------------------------------------------------------------------------------------------
# Bad input: clear errors naming the problem.


@pytest.mark.parametrize(
    "images,match",
    [
        (np.zeros((1, 8, 8, 4), np.float32), r"shape \(1, 8, 8, 4\).*RGB"),
        (np.zeros((1, 8, 8), np.float32), r"shape \(1, 8, 8\)"),
        (np.zeros((1, 3, 8, 8), np.float32), r"channels-last"),
        (np.zeros((1, 8, 8, 3), np.uint8), r"dtype uint8.*divide uint8 images by 255"),
        (np.full((1, 8, 8, 3), 2.0, np.float32), r"span \[2, 2\].*\[0, 1\]"),
        (np.full((1, 8, 8, 3), -0.5, np.float32), r"span \[-0.5, -0.5\]"),
        (np.full((1, 8, 8, 3), np.nan, np.float32), r"finite"),
        (
            np.zeros((1, 10, 8, 3), np.float32),
            r"10x8 is not a positive multiple of the VQ stride 4",
        ),
    ],
)
def test_bad_images_raise(model_and_params, images, match):
    model, params = model_and_params
    with pytest.raises(ValueError, match=match):
        model.apply({"params": params}, images, method=model.encode_to_ids)


def test_shape_errors_also_raise_under_jit(model_and_params):
    model, params = model_and_params
    encode = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.encode_to_ids))
    with pytest.raises(ValueError, match="multiple of the VQ stride"):
        encode(params, jnp.zeros((1, 6, 8, 3)))
    with pytest.raises(ValueError, match="dtype int32"):
        encode(params, jnp.zeros((1, 8, 8, 3), jnp.int32))


@pytest.mark.parametrize(
    "ids,match",
    [
        (np.full((1, 2, 2), 16, np.int32), r"span \[16, 16\].*\[0, 15\]"),
        (np.full((1, 2, 2), -1, np.int32), r"span \[-1, -1\]"),
        (np.zeros((1, 2, 2), np.float32), r"dtype float32; expected integers"),
        (np.zeros((2, 2), np.int32), r"shape \(2, 2\); expected \[batch, h, w\]"),
    ],
)
def test_bad_ids_raise(model_and_params, ids, match):
    model, params = model_and_params
    with pytest.raises(ValueError, match=match):
        model.apply({"params": params}, ids, method=model.decode_ids)


def test_bad_config_raises():
    with pytest.raises(ValueError, match="not divisible by norm_num_groups=4"):
        VQConfig(block_out_channels=(8, 10), norm_num_groups=4)
    with pytest.raises(ValueError, match="block_out_channels is empty"):
        VQConfig(block_out_channels=())


def test_discriminator_shapes():
    disc = PatchDiscriminator(widths=(8, 16), groups=4)
    images = _images((2, 16, 16, 3))
    params = _random_params(disc, images)
    assert jax.jit(disc.apply)({"params": params}, images).shape == (2, 4, 4, 1)


@pytest.mark.slow  # eager Flax init + apply: about two minutes of op-by-op compiles on CPU
def test_docstring_example():
    result = doctest.testmod(vq_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
