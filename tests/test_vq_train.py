"""End-to-end: launch.train_vq trains, logs, checkpoints, resumes and exports (slow: minutes)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from configs.vq_small import get_config
from editmgt_jax.models.vq import load_vq
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
