"""Parity of the Flax VQ tokenizer with the official diffusers `VQModel`.

1. Against the fixture made with the official PyTorch code (`official_vq`).
2. Against an independent NumPy transcription of the reference forward pass (NCHW, PyTorch weight
   layouts, straight from the state dict), itself checked on the fixture first, for VQs of other
   shapes (fewer levels, other widths, fewer codes, mid-block attention, vq_embed_dim).
3. Round trip load -> save -> load, and conversion errors.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from safetensors.numpy import load_file, save_file

from editmgt_jax.checkpoint import load_vq, save_vq
from editmgt_jax.checkpoint.convert.table import ConversionError, flatten
from editmgt_jax.checkpoint.convert.vq import param_shapes, vq_rules
from editmgt_jax.models.vq import VQConfig, VQModel
from tests.fixtures_path import fixtures_dir

TOL = 1e-4


def _nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _jit(model, method, **kwargs):
    """model.apply with `method`, jitted: eager Flax on CPU compiles op by op and is slow."""
    return jax.jit(lambda p, x: model.apply({"params": p}, x, method=method, **kwargs))


@pytest.fixture(scope="module")
def fixture():
    folder = fixtures_dir("official_vq")
    io = dict(np.load(os.path.join(folder, "vq_io.npz")))
    model, params = load_vq(folder)
    return folder, io, model, params


# --------------------------------------------------------------------------------------------------
# 1. The official fixture.


def test_latents_match_official(fixture):
    _, io, model, params = fixture
    # The official pipeline feeds [0, 1] images to the encoder, without 2x - 1.
    assert io["image"].min() >= 0 and io["image"].max() <= 1
    latents = _jit(model, model.encode)(params, _nchw_to_nhwc(io["image"]))
    err = np.abs(np.asarray(latents) - _nchw_to_nhwc(io["latents"])).max()
    assert err <= TOL, f"latents differ from the official ones by {err}"


def test_token_ids_match_official(fixture):
    _, io, model, params = fixture
    ids = model.apply({"params": params}, _nchw_to_nhwc(io["image"]), method=model.encode_to_ids)
    assert ids.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(ids), io["token_ids"])


def test_quantized_matches_official(fixture):
    _, io, model, params = fixture
    quantized, ids, _ = _jit(model, model.quantize)(params, _nchw_to_nhwc(io["latents"]))
    np.testing.assert_array_equal(np.asarray(ids), io["token_ids"])
    assert np.abs(np.asarray(quantized) - _nchw_to_nhwc(io["quantized"])).max() <= TOL


def test_decoded_matches_official(fixture):
    _, io, model, params = fixture
    ids = jnp.asarray(io["token_ids"])
    raw = _jit(model, model.decode_ids, clip=False)(params, ids)
    err = np.abs(np.asarray(raw) - _nchw_to_nhwc(io["decoded"])).max()
    assert err <= TOL, f"decoded image differs from the official one by {err}"
    clipped = _jit(model, model.decode_ids)(params, ids)
    err = np.abs(np.asarray(clipped) - _nchw_to_nhwc(io["decoded_clipped"])).max()
    assert err <= TOL, f"clipped decoded image differs from the official one by {err}"


def test_eager_contract_matches_official(fixture):
    """The documented call, un-jitted (input checks on concrete values run here)."""
    _, io, model, params = fixture
    variables = {"params": params}
    ids = model.apply(variables, _nchw_to_nhwc(io["image"][:1]), method=model.encode_to_ids)
    np.testing.assert_array_equal(np.asarray(ids), io["token_ids"][:1])
    decoded = model.apply(variables, ids, method=model.decode_ids)
    err = np.abs(np.asarray(decoded) - _nchw_to_nhwc(io["decoded_clipped"][:1])).max()
    assert err <= TOL


# --------------------------------------------------------------------------------------------------
# 2. An independent NumPy reference of the diffusers forward pass (NCHW, torch layouts).


def _conv2d(x, weight, bias, stride=1, padding=1):
    """x [B,C,H,W], weight [O,C,kh,kw] -> [B,O,H',W'] (cross-correlation, as torch)."""
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    kh, kw = weight.shape[2:]
    windows = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    return (
        np.einsum("bchwij,ocij->bohw", windows, weight, optimize=True) + bias[None, :, None, None]
    )


def _group_norm(x, groups, weight, bias, eps=1e-6):
    b, c, h, w = x.shape
    g = x.reshape(b, groups, -1).astype(np.float64)
    g = (g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + eps)
    return g.reshape(b, c, h, w) * weight[None, :, None, None] + bias[None, :, None, None]


def _silu(x):
    return x / (1.0 + np.exp(-x))


class _Reference:
    """diffusers VQModel semantics transcribed for float64 NumPy, reading the state dict."""

    def __init__(self, config: dict, state: dict):
        self.c, self.s = config, {k: v.astype(np.float64) for k, v in state.items()}

    def _p(self, name):
        return self.s[name + ".weight"], self.s[name + ".bias"]

    def norm(self, x, name):
        return _group_norm(x, self.c["norm_num_groups"], *self._p(name))

    def resnet(self, x, name):
        h = _conv2d(_silu(self.norm(x, name + ".norm1")), *self._p(name + ".conv1"))
        h = _conv2d(_silu(self.norm(h, name + ".norm2")), *self._p(name + ".conv2"))
        if name + ".conv_shortcut.weight" in self.s:
            x = _conv2d(x, *self._p(name + ".conv_shortcut"), padding=0)
        return x + h

    def attention(self, x, name):
        b, c, h, w = x.shape
        t = self.norm(x, name + ".group_norm").reshape(b, c, h * w).transpose(0, 2, 1)
        q, k, v = (
            t @ self.s[f"{name}.to_{n}.weight"].T + self.s[f"{name}.to_{n}.bias"] for n in "qkv"
        )
        a = q @ k.transpose(0, 2, 1) / np.sqrt(c)
        a = np.exp(a - a.max(-1, keepdims=True))
        a = a / a.sum(-1, keepdims=True)
        o = (a @ v) @ self.s[f"{name}.to_out.0.weight"].T + self.s[f"{name}.to_out.0.bias"]
        return x + o.transpose(0, 2, 1).reshape(b, c, h, w)

    def mid(self, x, name):
        x = self.resnet(x, name + ".resnets.0")
        if self.c.get("mid_block_add_attention", True):
            x = self.attention(x, name + ".attentions.0")
        return self.resnet(x, name + ".resnets.1")

    def encode(self, x):
        levels = len(self.c["block_out_channels"])
        x = _conv2d(x, *self._p("encoder.conv_in"))
        for i in range(levels):
            for j in range(self.c["layers_per_block"]):
                x = self.resnet(x, f"encoder.down_blocks.{i}.resnets.{j}")
            if i < levels - 1:
                x = np.pad(x, ((0, 0), (0, 0), (0, 1), (0, 1)))
                x = _conv2d(x, *self._p(f"encoder.down_blocks.{i}.downsamplers.0.conv"), 2, 0)
        x = self.mid(x, "encoder.mid_block")
        x = _conv2d(_silu(self.norm(x, "encoder.conv_norm_out")), *self._p("encoder.conv_out"))
        return _conv2d(x, *self._p("quant_conv"), padding=0)

    def nearest(self, latents):
        codes = self.s["quantize.embedding.weight"]
        z = latents.transpose(0, 2, 3, 1)
        d = ((z[..., None, :] - codes) ** 2).sum(-1)
        return d.argmin(-1)

    def decode(self, ids):
        x = self.s["quantize.embedding.weight"][ids].transpose(0, 3, 1, 2)
        x = _conv2d(x, *self._p("post_quant_conv"), padding=0)
        x = _conv2d(x, *self._p("decoder.conv_in"))
        x = self.mid(x, "decoder.mid_block")
        levels = len(self.c["block_out_channels"])
        for i in range(levels):
            for j in range(self.c["layers_per_block"] + 1):
                x = self.resnet(x, f"decoder.up_blocks.{i}.resnets.{j}")
            if i < levels - 1:
                x = x.repeat(2, axis=2).repeat(2, axis=3)
                x = _conv2d(x, *self._p(f"decoder.up_blocks.{i}.upsamplers.0.conv"))
        x = _silu(self.norm(x, "decoder.conv_norm_out"))
        return _conv2d(x, *self._p("decoder.conv_out"))


def test_numpy_reference_reproduces_fixture(fixture):
    """The reference below is trusted only because it reproduces the official outputs."""
    folder, io, _, _ = fixture
    with open(os.path.join(folder, "vq_config.json")) as f:
        config = json.load(f)
    ref = _Reference(config, load_file(os.path.join(folder, "vq.safetensors")))
    latents = ref.encode(io["image"][:1].astype(np.float64))
    assert np.abs(latents - io["latents"][:1]).max() <= TOL
    np.testing.assert_array_equal(ref.nearest(latents), io["token_ids"][:1])
    assert np.abs(ref.decode(io["token_ids"][:1]) - io["decoded"][:1]).max() <= TOL


def _random_state(config: VQConfig, seed: int) -> dict[str, np.ndarray]:
    """Random official-layout weights for `config`, drawn like the fixture (every path matters)."""
    rng = np.random.default_rng(seed)
    shapes = param_shapes(VQModel(config))
    state = {}
    for rule in vq_rules(config):
        shape = rule.hook.to_theirs(np.empty(shapes[rule.ours], np.int8)).shape
        if rule.theirs.endswith("embedding.weight"):
            value = rng.normal(0, 1, shape)
        elif "norm" in rule.theirs and rule.theirs.endswith(".weight"):
            value = rng.normal(1, 0.1, shape)
        elif rule.theirs.endswith(".bias"):
            value = rng.normal(0, 0.05, shape)
        else:
            value = rng.normal(0, 1 / np.sqrt(np.prod(shape[1:])), shape)
        state[rule.theirs] = value.astype(np.float32)
    return state


OTHER_SHAPES = {
    "three_levels_attention": VQConfig(
        block_out_channels=(8, 16, 24),
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=6,
        vq_embed_dim=5,
        num_vq_embeddings=32,
        mid_block_add_attention=True,
    ),
    "two_levels_wide": VQConfig(
        block_out_channels=(12, 12),
        layers_per_block=3,
        norm_num_groups=3,
        latent_channels=8,
        num_vq_embeddings=16,
        mid_block_add_attention=False,
    ),
}


@pytest.mark.parametrize("name", sorted(OTHER_SHAPES))
def test_parity_other_shapes(name, tmp_path):
    config = OTHER_SHAPES[name]
    state = _random_state(config, seed=len(name))
    folder = str(tmp_path / name)
    os.makedirs(folder)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config.to_diffusers(), f)
    save_file(state, os.path.join(folder, "diffusion_pytorch_model.safetensors"))

    model, params = load_vq(folder)
    assert model.config == config
    ref = _Reference(config.to_diffusers(), state)
    stride = config.stride
    images = np.random.default_rng(1).uniform(0, 1, (2, 3, 4 * stride, 6 * stride))
    latents = ref.encode(images)
    images = _nchw_to_nhwc(images.astype(np.float32))
    ours = _jit(model, model.encode)(params, images)
    assert np.abs(np.asarray(ours) - _nchw_to_nhwc(latents)).max() <= TOL

    ids = _jit(model, model.encode_to_ids)(params, images)
    np.testing.assert_array_equal(np.asarray(ids), ref.nearest(latents))
    decoded = _jit(model, model.decode_ids, clip=False)(params, ids)
    assert np.abs(np.asarray(decoded) - _nchw_to_nhwc(ref.decode(np.asarray(ids)))).max() <= TOL


# --------------------------------------------------------------------------------------------------
# 3. Round trip and conversion errors.


def test_round_trip_is_bit_exact(fixture, tmp_path):
    folder, _, model, params = fixture
    out = str(tmp_path / "export")
    save_vq(out, model, params)
    assert sorted(os.listdir(out)) == ["config.json", "diffusion_pytorch_model.safetensors"]

    original = load_file(os.path.join(folder, "vq.safetensors"))
    exported = load_file(os.path.join(out, "diffusion_pytorch_model.safetensors"))
    assert sorted(exported) == sorted(original)
    for key, value in original.items():
        assert exported[key].dtype == value.dtype and exported[key].shape == value.shape, key
        np.testing.assert_array_equal(exported[key], value, err_msg=key)

    model2, params2 = load_vq(out)
    assert model2.config == model.config
    flat, flat2 = flatten(params), flatten(params2)
    assert sorted(flat) == sorted(flat2)
    for path, value in flat.items():
        np.testing.assert_array_equal(np.asarray(flat2[path]), np.asarray(value), err_msg=path)


def _copy_fixture(folder: str, dest: str, edit) -> str:
    os.makedirs(dest)
    shutil.copy(os.path.join(folder, "vq_config.json"), os.path.join(dest, "config.json"))
    state = edit(dict(load_file(os.path.join(folder, "vq.safetensors"))))
    save_file(state, os.path.join(dest, "diffusion_pytorch_model.safetensors"))
    return dest


def test_missing_and_unexpected_keys_raise(fixture, tmp_path):
    folder = fixture[0]

    def edit(state):
        del state["decoder.up_blocks.1.resnets.0.conv_shortcut.weight"]
        del state["quantize.embedding.weight"]
        state["encoder.extra.weight"] = np.zeros(3, np.float32)
        return state

    with pytest.raises(ConversionError) as err:
        load_vq(_copy_fixture(folder, str(tmp_path / "broken"), edit))
    message = str(err.value)
    assert "decoder.up_blocks.1.resnets.0.conv_shortcut.weight" in message
    assert "quantize.embedding.weight" in message
    assert "encoder.extra.weight" in message
    assert set(err.value.missing) == {
        "decoder.up_blocks.1.resnets.0.conv_shortcut.weight",
        "quantize.embedding.weight",
    }
    assert err.value.unexpected == ["encoder.extra.weight"]


def test_misshaped_key_raises(fixture, tmp_path):
    folder = fixture[0]

    def edit(state):
        state["encoder.conv_in.weight"] = state["encoder.conv_in.weight"][:, :, :2]
        return state

    with pytest.raises(ConversionError, match=r"encoder\.conv_in\.weight has shape"):
        load_vq(_copy_fixture(folder, str(tmp_path / "misshaped"), edit))


def test_missing_folder_and_config_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_vq(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_vq(str(tmp_path))


def test_unsupported_layout_raises(fixture, tmp_path):
    folder = fixture[0]
    with open(os.path.join(folder, "vq_config.json")) as f:
        config = json.load(f)
    config["norm_type"] = "spatial"
    with pytest.raises(ValueError, match="norm_type='spatial'"):
        VQConfig.from_diffusers(config)
