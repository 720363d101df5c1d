"""Weight import/export between the official layout and ours."""

import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from editmgt_jax.checkpoint.convert.from_torch import load_transformer
from editmgt_jax.checkpoint.convert.table import ConversionError
from editmgt_jax.checkpoint.convert.to_torch import save_transformer, transformer_state_dict
from tests.fixtures_path import fixtures_dir

TINY = fixtures_dir("official_tiny")


def official_state():
    return load_file(os.path.join(TINY, "transformer.safetensors"))


@pytest.mark.parametrize("scan", [False, True])
def test_round_trip_is_bit_exact(scan):
    cfg, params = load_transformer(TINY, scan_layers=scan)
    theirs = transformer_state_dict(cfg, params)
    original = official_state()
    assert sorted(theirs) == sorted(original)
    for key, value in original.items():
        assert theirs[key].dtype == value.dtype and theirs[key].shape == value.shape, key
        np.testing.assert_array_equal(theirs[key], value, err_msg=key)


def test_save_then_load_again(tmp_path):
    cfg, params = load_transformer(TINY)
    save_transformer(str(tmp_path / "transformer"), cfg, params)
    with open(tmp_path / "transformer" / "config.json") as f:
        written = json.load(f)
    with open(os.path.join(TINY, "config.json")) as f:
        original = json.load(f)
    assert {k: written[k] for k in original} == original
    cfg2, params2 = load_transformer(str(tmp_path))  # finds the transformer/ subfolder
    assert cfg2 == cfg
    flat = transformer_state_dict(cfg2, params2)
    for key, value in official_state().items():
        np.testing.assert_array_equal(flat[key], value)


def make_folder(tmp_path, state, config=None):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    shutil.copy(os.path.join(TINY, "config.json"), folder / "config.json")
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
    return str(folder)


def test_bad_keys_are_all_listed(tmp_path):
    state = official_state()
    del state["transformer_blocks.0.attn.to_q.weight"]
    del state["mlm_layer.conv2.weight"]
    state["something.extra"] = np.zeros(3, np.float32)
    state["context_embedder.weight"] = np.zeros((64, 65), np.float32)
    with pytest.raises(ConversionError) as info:
        load_transformer(make_folder(tmp_path, state))
    err = info.value
    assert sorted(err.missing) == [
        "mlm_layer.conv2.weight",
        "transformer_blocks.0.attn.to_q.weight",
    ]
    assert err.unexpected == ["something.extra"]
    assert err.misshaped == [("context_embedder.weight", (64, 65), (64, 64))]
    message = str(err)
    for key in ("mlm_layer.conv2.weight", "something.extra", "context_embedder.weight"):
        assert key in message


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist|No transformer config.json"):
        load_transformer(str(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="No transformer config.json"):
        load_transformer(str(empty))
    (empty / "config.json").write_text(open(os.path.join(TINY, "config.json")).read())
    with pytest.raises(FileNotFoundError, match="no weights"):
        load_transformer(str(empty))


def test_unknown_config_field_is_rejected(tmp_path):
    with open(os.path.join(TINY, "config.json")) as f:
        config = json.load(f)
    config["num_expert_layers"] = 3
    with pytest.raises(ValueError, match="num_expert_layers"):
        load_transformer(make_folder(tmp_path, official_state(), config))
