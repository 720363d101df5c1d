"""End-to-end: launch.train_vq trains, logs, checkpoints, resumes and exports (slow: minutes)."""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.vq_small import get_config
from editmgt_jax.checkpoint import load_vq, save_vq
from launch import train_vq


def test_sample_photos_are_rgb_in_unit_range():
    for name in train_vq.TRAIN_PHOTOS + train_vq.EVAL_PHOTOS:
        image = train_vq.load_photo(name)
        assert image.ndim == 3 and image.shape[-1] == 3 and image.dtype == np.float32, name
        assert image.min() >= 0 and image.max() <= 1, name
    assert not set(train_vq.TRAIN_PHOTOS) & set(train_vq.EVAL_PHOTOS)


def test_runlocal_config_is_locked_and_valid():
    config = get_config("runlocal")
    assert config.data.image_size % 2 ** (len(config.model.block_out_channels) - 1) == 0
    with pytest.raises(ValueError, match="Unknown variant"):
        get_config("huge")


@pytest.mark.slow
def test_train_resume_export(tmp_path):
    workdir = str(tmp_path / "run")
    config = get_config("runlocal")
    config.num_steps = 3
    first = train_vq.train(config, workdir)
    assert first["steps"] == 3 and np.isfinite(first["eval_psnr"])
    config.num_steps = 5
    second = train_vq.train(config, workdir)  # resumes from step 3
    assert second["steps"] == 5
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == 5
    assert {"psnr", "perplexity", "usage"} <= set(records[-1])
    model, params = load_vq(os.path.join(workdir, "vq"))
    assert model.config.num_vq_embeddings == config.model.num_vq_embeddings


def _tiny_state(trainable: str):
    config = get_config("runlocal")
    config.trainable = trainable
    model = train_vq.make_model(config)
    state = train_vq.create_state(config, model, None, _init_key())
    return config, model, state


def _init_key():
    # An rbg key: XLA compiles the initializers several times faster than with threefry (the
    # values are not what these tests check).
    return jax.random.key(0, impl="rbg")


def _group_changed(before, after) -> dict[str, bool]:
    return {
        name: any(
            not np.array_equal(a, b)
            for a, b in zip(
                jax.tree.leaves(before[name]), jax.tree.leaves(after[name]), strict=True
            )
        )
        for name in before
    }


@pytest.mark.parametrize(
    "trainable",
    ["decoder", pytest.param("all", marks=pytest.mark.slow)],  # "all": the control
)
def test_trainable_decoder_keeps_the_tokenizer_bit_identical(trainable):
    config, model, state = _tiny_state(trainable)
    before = jax.device_get(state["params"])
    step = jax.jit(functools.partial(train_vq.train_step, config, model, None, None))
    images = jnp.asarray(np.random.default_rng(0).random((4, 16, 16, 3)), jnp.float32)
    for i in range(2):
        state, metrics = step(state, images, jax.random.key(i))
    assert np.isfinite(float(metrics["loss"]))
    after = jax.device_get(state["params"])
    changed = _group_changed(before, after)
    assert changed["decoder"] and changed["post_quant_conv"]
    frozen = trainable == "decoder"
    assert changed["encoder"] is not frozen and changed["quant_conv"] is not frozen
    if frozen:  # the tokenizer: codebook and token ids, bit for bit
        assert not changed["codebook"]
        encode = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.encode_to_ids))
        other = jnp.asarray(np.random.default_rng(1).random((4, 16, 16, 3)), jnp.float32)
        for batch in (images, other):
            np.testing.assert_array_equal(encode(after, batch), encode(before, batch))


def test_unknown_trainable_is_a_clear_error():
    config = get_config("runlocal")
    config.trainable = "encoder_only"
    with pytest.raises(ValueError, match="trainable='encoder_only'.*expected one of"):
        train_vq.make_vq_optimizer(config)


def test_init_from_loads_a_matching_folder_and_rejects_another(tmp_path):
    config, model, state = _tiny_state("all")
    save_vq(str(tmp_path / "vq"), model, jax.device_get(state["params"]))
    _, _, fresh = _tiny_state("all")
    fresh = jax.tree.map(jnp.zeros_like, fresh["params"])
    loaded = train_vq.init_params_from(str(tmp_path / "vq"), fresh)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(state["params"]), strict=True):
        np.testing.assert_array_equal(a, b)
    wider = get_config("runlocal")
    wider.model.block_out_channels = (8, 32)
    other = train_vq.create_state(wider, train_vq.make_model(wider), None, _init_key())
    with pytest.raises(ValueError, match="does not match config.model"):
        train_vq.init_params_from(str(tmp_path / "vq"), other["params"])
