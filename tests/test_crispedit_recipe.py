"""The released model's fine-tuning recipe (configs/editmgt_crispedit.py) at miniature size.

The miniature released folder (the parity fixtures laid out as the release: 2 + 2 blocks,
CLIP + Gemma 2, a 16-px-per-token VQ) goes through the whole path a user takes with the real
one: launch.convert -> launch.prepare_data + launch.tokenize_shards on a CrispEdit-layout parquet
set -> launch.train with the recipe (stopped, resumed) -> the exported bundle -> launch.edit ->
launch.export --to_torch, whose transformer has exactly the official state dict's keys, shapes
and dtypes. Beside it: the architecture comes from the bundle (contradictions are errors), the
LoRA variant adapts only the official targets, and the loss falls on a fixed batch with
CLIP + Gemma 2 conditioning encoded on the mesh.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from configs import editmgt_crispedit
from data_pipelines.fake_crispedit import write_fake_crispedit
from editmgt_jax.checkpoint.bundle import load_bundle, read_manifest
from editmgt_jax.checkpoint.convert.table import flatten
from editmgt_jax.training.config_from_bundle import resolve_config
from tests.fixtures_path import fixtures_dir
from tests.released_layout import released_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64  # pixels: 4 x 4 VQ tokens, 2 x 2 transformer positions (16 px a token, downsample 2)


def run(*args: str, timeout: int = 600) -> dict:
    """A launch script in a subprocess; its final JSON line."""
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("recipe")
    released = released_folder(root / "EditMGT")
    out = str(root / "ckpt")
    report = run("launch.convert", "--from_torch", released, "--out", out)
    assert report["warnings"] == []
    return out


@pytest.fixture(scope="module")
def token_shards(bundle, tmp_path_factory) -> str:
    """A CrispEdit-layout parquet set (7 categories) -> edit-record shards -> token shards made
    with the bundle's own VQ."""
    root = tmp_path_factory.mktemp("crispedit")
    fake = write_fake_crispedit(str(root / "raw"), rows_per_file=6, size=SIZE, with_faults=False)
    shards, tokens = str(root / "shards"), str(root / "tokens")
    prepared = run(
        "launch.prepare_data", "--from_parquet", fake.root, "--out", shards, "--num_shards", "2"
    )
    assert prepared["written"] == len(fake.good)
    report = run(
        "launch.tokenize_shards",
        *("--shards", shards, "--vq", bundle, "--out", tokens),
        *("--resolution", str(SIZE), "--batch_size", "8"),
    )
    assert report["written"] == len(fake.good) and report["token_shape"] == [4, 4]
    return tokens


def recipe(bundle: str, tokens: str, arg: str | None = None, **train):
    """The recipe at miniature size: only image size, batch, steps and float32 compute change."""
    config = editmgt_crispedit.get_config(arg)
    config.init_from, config.data.path, config.image_size = bundle, tokens, SIZE
    config.model.dtype = config.text_encoder.dtype = "float32"
    config.train.batch_size, config.optim.accumulation_steps = 4, 1
    config.train.update(dict(steps=4, checkpoint_every=2, log_every=1), **train)
    return config


def cli_overrides(bundle: str, tokens: str, **train) -> list[str]:
    fields = dict(steps=4, checkpoint_every=2, log_every=1, batch_size=4, **train)
    return [
        *("--config", "configs/editmgt_crispedit.py"),
        f"--config.init_from={bundle}",
        f"--config.data.path={tokens}",
        f"--config.image_size={SIZE}",
        "--config.model.dtype=float32",
        "--config.text_encoder.dtype=float32",
        "--config.optim.accumulation_steps=1",
        *(f"--config.train.{k}={v}" for k, v in fields.items()),
    ]


def test_the_architecture_comes_from_the_bundle_and_a_contradiction_names_both(bundle, tmp_path):
    manifest = read_manifest(bundle)["transformer"]
    config = editmgt_crispedit.get_config()
    config.init_from, config.image_size = bundle, SIZE
    resolved = resolve_config(config)
    for field in ("num_layers", "num_single_layers", "joint_attention_dim", "codebook_size"):
        assert resolved.model[field] == manifest[field]
    assert tuple(resolved.model.axes_dims_rope) == tuple(manifest["axes_dims_rope"])
    assert resolved.model.timestep_convention == "official"  # a converted release
    assert resolved.pipeline.resolution == SIZE
    # Without init_from: the released structure (what launch.inspect / launch.aot compile).
    released = resolve_config(editmgt_crispedit.get_config())
    assert (released.model.num_layers, released.model.num_single_layers) == (14, 28)
    assert released.model.joint_attention_dim == 2304
    config.model.num_layers = 14  # as `--config.model.num_layers=14` sets it
    with pytest.raises(ValueError, match=r"model\.num_layers=14 but the init_from bundle .* has 2"):
        resolve_config(config)
    # The command line says it in one line, before anything is written.
    proc = subprocess.run(
        [sys.executable, "-m", "launch.train", "--config", "configs/editmgt_crispedit.py",
         f"--config.init_from={bundle}", "--config.model.num_layers=14",
         "--workdir", str(tmp_path / "never")],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu"),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "model.num_layers=14 but the init_from bundle" in proc.stderr
    assert not (tmp_path / "never").exists()


def test_lora_variant_trains_only_the_official_targets(bundle, token_shards, tmp_path):
    from launch.train import train

    config = recipe(bundle, token_shards, "lora", steps=2)
    assert (config.lora.rank, config.lora.alpha) == (32, 128.0)
    train(config, str(tmp_path / "lora"))
    trained = flatten(load_bundle(str(tmp_path / "lora" / "bundle")).transformer_params)
    initial = flatten(load_bundle(bundle).transformer_params)
    changed = {k for k, v in trained.items() if not np.array_equal(v, initial[k])}
    # The merged adapters moved every block's q, k and v kernels (2 double-stream + 2
    # single-stream blocks, as peft's target_modules=["to_q", "to_k", "to_v"]) and nothing else.
    assert len(changed) == 3 * 4, sorted(changed)
    assert all(k.split("/")[-2] in ("to_q", "to_k", "to_v") for k in changed), sorted(changed)
    assert all(k.endswith("/kernel") for k in changed)


def test_round_trip_convert_data_train_resume_export_edit_to_torch(bundle, token_shards, tmp_path):
    from launch.train import train

    # Stopped after step 2 (as a preemption would), then the same command resumes to step 4.
    stopped = tmp_path / "stopped"
    first = run("launch.train", *cli_overrides(bundle, token_shards, stop_after_steps=2),
                "--workdir", str(stopped))  # fmt: skip
    assert first["final"]["step"] == 2 and not (stopped / "bundle").exists()
    resumed = run("launch.train", *cli_overrides(bundle, token_shards), "--workdir", str(stopped))
    assert resumed["final"]["step"] == 4
    # The same recipe, never interrupted (in this process).
    train(recipe(bundle, token_shards), str(tmp_path / "straight"))
    ours = load_bundle(str(stopped / "bundle"))
    straight = load_bundle(str(tmp_path / "straight" / "bundle"))
    for key, value in flatten(straight.transformer_params).items():
        np.testing.assert_allclose(
            flatten(ours.transformer_params)[key], value, rtol=0, atol=1e-6, err_msg=key
        )
    # No EMA in this recipe: the bundle holds the trained weights, which moved off the release.
    initial = flatten(load_bundle(bundle).transformer_params)
    assert ours.metadata["ema_decay"] == 0.0
    assert any(
        not np.array_equal(initial[k], v) for k, v in flatten(ours.transformer_params).items()
    )
    # The exported bundle carries the converted CLIP + Gemma 2 (unchanged) and their tokenizers.
    assert ours.text_encoder["kind"] == "clip_gemma2"
    np.testing.assert_array_equal(
        flatten(ours.text_params)["gemma/embed_tokens"],
        flatten(load_bundle(bundle).text_params)["gemma/embed_tokens"],
    )
    # It edits.
    image = os.path.join(REPO, "examples", "color.png")
    out = tmp_path / "edited.png"
    run("launch.edit", "--checkpoint", str(stopped / "bundle"), "--image", image,
        "--instruction", "make the circle red", "--out", str(out))  # fmt: skip
    assert out.is_file()
    # And goes back to the official layout: the same keys, shapes and dtypes as the official
    # PyTorch state dict (the fixture made by the official code), with the trained values.
    torch_dir = tmp_path / "torch"
    run("launch.export", "--checkpoint", str(stopped / "bundle"), "--to_torch", str(torch_dir))
    exported = load_file(str(torch_dir / "editmgt" / "diffusion_pytorch_model.safetensors"))
    official = load_file(fixtures_dir("official_tiny", "transformer.safetensors"))
    assert sorted(exported) == sorted(official)
    for key, value in official.items():
        assert exported[key].shape == value.shape and exported[key].dtype == value.dtype, key
    assert any(not np.array_equal(exported[k], official[k]) for k in official)
    gemma = load_file(str(torch_dir / "llm_encoder" / "model.safetensors"))
    for key, value in load_file(fixtures_dir("text", "gemma2_tiny", "model.safetensors")).items():
        np.testing.assert_array_equal(gemma[key], value, err_msg=key)


def test_the_loss_falls_on_a_fixed_batch_with_clip_gemma2_encoded_on_the_mesh(bundle, token_shards):
    from data_pipelines.loader import EditLoader
    from editmgt_jax import sharding
    from editmgt_jax.models.transformer import Transformer, example_inputs
    from editmgt_jax.models.transformer_config import TransformerConfig
    from editmgt_jax.training.from_config import step_options
    from editmgt_jax.training.optimizer import make_optimizer
    from editmgt_jax.training.pipeline import TrainingInputs
    from editmgt_jax.training.step import jit_train_step, make_train_step
    from editmgt_jax.training.train_state import create_sharded_train_state, warm_start
    from launch.train import make_loader

    config = resolve_config(recipe(bundle, token_shards))
    config.optim.learning_rate = 3e-3  # overfitting 4 edits in a few dozen steps
    mesh = sharding.create_mesh(config.mesh.ici_parallelism, config.mesh.dcn_parallelism)
    cfg = TransformerConfig.from_dict(config.model)
    model, tx = Transformer(cfg), make_optimizer(config.optim, 40)
    inputs = TrainingInputs.create(config)
    assert type(inputs.text_encoder).__name__ == "CLIPGemma2Encoder"
    batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
    conditioning = inputs.conditioning(mesh, batch_sharding, cache=False)
    loader: EditLoader = make_loader(config)
    host = next(loader)
    loader.close()
    batch = inputs.device_batch(host, conditioning)
    # The states encoded on the mesh are the encoder's own.
    expected = inputs.text_encoder.encode([str(s) for s in host["instruction"]])
    np.testing.assert_allclose(batch["text_states"], expected.states, atol=1e-5)
    np.testing.assert_allclose(batch["pooled"], expected.pooled, atol=1e-5)
    sample = example_inputs(cfg, batch=1, grid=(4, 4), text_len=inputs.text_len)
    state, shardings = create_sharded_train_state(
        model, tx, jax.random.key(0), sample, mesh, use_ema=False
    )
    state = warm_start(bundle, cfg, state, shardings)
    assert state.ema_params is None
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    step = jit_train_step(
        make_train_step(model, step_options(config, cfg, None)), shardings, batch_sharding,
        replicated,
    )  # fmt: skip
    uncond = conditioning.uncond()
    losses = []
    for _ in range(40):
        state, metrics = step(state, batch, *uncond, jax.random.key(1))
        losses.append(float(metrics["loss"]))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses


def test_text_weights_are_sharded_over_fsdp_and_encode_as_on_one_device(bundle):
    from tests.test_sharding import run_on_8_devices

    result = run_on_8_devices("tests.multidevice.text_conditioning_sharded", bundle)
    assert result["states_error"] < 1e-5 and result["pooled_error"] < 1e-5, result
    assert "fsdp" in result["gemma_embed"], result  # [vocab, hidden] split over fsdp
    assert result["sharded_leaves"] >= result["leaves"] // 2, result
    assert "data" in result["states_sharding"], result  # states split like the batch


def test_inspect_prints_the_recipe_state_and_text_encoder_bytes():
    report = run("launch.inspect", "--config", "configs/editmgt_crispedit.py", "--nocompile")
    params = 1_009_306_624  # the released transformer (DESIGN.md)
    assert report["transformer_params"] == params and report["param_bytes"] == 4 * params
    # The float32 gradient accumulator of optim.accumulation_steps (8), and AdamW's two moments
    # in 8 bits (one byte each a parameter, float32 block scales, small leaves kept float32);
    # no EMA in this recipe.
    moments = report["optimizer_state_bytes"] - 4 * params
    assert 2.0 * params < moments < 2.1 * params, report
    assert report["ema_bytes"] == 0
    fp32 = run("launch.inspect", "--config", "configs/editmgt_crispedit.py", "--nocompile",
               "--config.optim.moments=float32")  # fmt: skip
    assert 0 <= fp32["optimizer_state_bytes"] - 3 * 4 * params < 1024, fp32
    # Gemma 2 2B has 2,614,341,888 parameters (its model card); the rest is the CLIP text tower.
    clip = report["text_encoder_params"] - 2_614_341_888
    assert 300e6 < clip < 400e6, report
    lora = run("launch.inspect", "--config", "configs/editmgt_crispedit.py:lora", "--nocompile")
    assert lora["trainable_params"] < 0.01 * params  # r 32 on q, k, v of 42 blocks


def test_partial_init_loads_a_meissonic_layout_into_the_editmgt_structure(tmp_path):
    """Meissonic has no text connector and takes CLIP-width states; the official script starts
    EditMGT from it by loading whatever matches in path and shape (`init_partial`)."""
    from safetensors.numpy import save_file

    from editmgt_jax import sharding
    from editmgt_jax.checkpoint import load_transformer
    from editmgt_jax.models.transformer import Transformer, example_inputs
    from editmgt_jax.training.optimizer import make_optimizer
    from editmgt_jax.training.train_state import create_sharded_train_state, warm_start

    official = json.load(open(fixtures_dir("official_tiny", "config.json")))
    state_dict = load_file(fixtures_dir("official_tiny", "transformer.safetensors"))
    meissonic = tmp_path / "Meissonic" / "transformer"
    meissonic.mkdir(parents=True)
    inner = official["num_attention_heads"] * official["attention_head_dim"]
    config = {k: v for k, v in official.items() if k != "connector_type"}
    config.update(joint_attention_dim=inner, text_encoder_architecture="CLIP")
    json.dump(config, open(meissonic / "config.json", "w"))
    save_file(
        {k: v for k, v in state_dict.items() if not k.startswith("connector")},
        str(meissonic / "diffusion_pytorch_model.safetensors"),
    )
    editmgt_cfg, _ = load_transformer(fixtures_dir("official_tiny"))
    model = Transformer(editmgt_cfg)
    mesh = sharding.create_mesh((1, 1, 1))
    sample = example_inputs(editmgt_cfg, batch=1, grid=(4, 4), text_len=4)
    tx = make_optimizer(editmgt_crispedit.get_config().optim, 10)
    state, shardings = create_sharded_train_state(
        model, tx, jax.random.key(0), sample, mesh, use_ema=False
    )
    initial = flatten(jax.device_get(state.params))
    with pytest.raises(ValueError, match="joint_attention_dim"):
        warm_start(str(meissonic), editmgt_cfg, state, shardings)
    state = warm_start(str(meissonic), editmgt_cfg, state, shardings, partial=True)
    loaded = flatten(load_transformer(str(meissonic))[1])
    for path, value in flatten(jax.device_get(state.params)).items():
        if path.startswith("connector"):  # new in EditMGT: left as initialised
            np.testing.assert_array_equal(value, initial[path])
        else:
            np.testing.assert_array_equal(value, loaded[path], err_msg=path)
    assert any(p.startswith("connector") for p in initial)


def test_a_run_refuses_to_resume_under_another_optimizer_state_or_lora():
    from editmgt_jax.checkpoint.manager import config_differences

    saved = editmgt_crispedit.get_config().to_dict()
    same = editmgt_crispedit.get_config().to_dict()
    assert config_differences(saved, same) == []
    other = editmgt_crispedit.get_config()
    other.optim.moments = "float32"
    assert config_differences(saved, other.to_dict()) == ["optim.moments: 'int8' -> 'float32'"]
    lora = editmgt_crispedit.get_config("lora").to_dict()
    assert config_differences(saved, lora) == ["lora.rank: 0 -> 32"]
    old = dict(saved, optim={k: v for k, v in saved["optim"].items() if k != "moments"})
    assert config_differences(old, dict(same, optim=dict(same["optim"], moments="float32"))) == []
