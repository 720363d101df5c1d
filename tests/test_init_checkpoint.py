"""launch.init_checkpoint: a random bundle that says so, and defaults for configs without sections."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from configs import official_tiny, small_40m, smoke
from editmgt_jax.checkpoint.bundle import load_bundle, save_bundle
from editmgt_jax.models.transformer_config import TransformerConfig
from launch import init_checkpoint


def test_smoke_bundle_round_trip_is_labelled_random(tmp_path):
    config = smoke.get_config()
    bundle = init_checkpoint.random_bundle(config)
    path = save_bundle(str(tmp_path / "bundle"), bundle)
    loaded = load_bundle(path)
    assert loaded.metadata["random_init"] is True
    assert loaded.metadata["config"]["model"]["num_layers"] == 1
    assert loaded.text_encoder == {"kind": "minilm", "max_length": 32}
    assert loaded.pipeline["capture_blocks"] == [1]
    assert loaded.pipeline["resolution"] == 32
    assert loaded.transformer_config == TransformerConfig.from_dict(config.model)
    assert loaded.vq_config["num_vq_embeddings"] == 64
    for a, b in zip(
        jax.tree.leaves(bundle.transformer_params),
        jax.tree.leaves(loaded.transformer_params),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_official_tiny_without_text_encoder_is_a_clear_error():
    with pytest.raises(ValueError, match="joint_attention_dim=48"):
        init_checkpoint.random_bundle(official_tiny.get_config())


def test_small_40m_gets_minilm_default_vq_and_pipeline():
    config = small_40m.get_config()
    cfg = TransformerConfig.from_dict(config.model)
    assert init_checkpoint.text_encoder_spec(config, cfg)["kind"] == "minilm"
    vq = init_checkpoint.vq_config(config, cfg)
    assert vq.num_vq_embeddings == cfg.codebook_size and vq.stride == 8
    pipeline = init_checkpoint.pipeline_defaults(config, cfg, vq)
    assert pipeline["resolution"] == 32 * 8 * 2
    assert pipeline["capture_blocks"] == [cfg.num_layers + cfg.num_single_layers // 2]


def test_mismatched_vq_codebook_is_an_error():
    config = smoke.get_config()
    config.vq.num_vq_embeddings = 32
    with pytest.raises(ValueError, match="32 codes but the transformer predicts codebook_size=64"):
        init_checkpoint.vq_config(config, TransformerConfig.from_dict(config.model))
