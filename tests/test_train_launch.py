"""launch.train end to end: resume equals uninterrupted on 8 simulated devices; bad configs fail early."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from configs import smoke
from editmgt_jax.checkpoint.manager import TrainCheckpoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESH_2x4 = "--config.mesh.ici_parallelism=(2, 4, 1)"
MESH_1x2 = "--config.mesh.ici_parallelism=(1, 2, 1)"


def train(workdir, *overrides, devices=8, check=True):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    cmd = [sys.executable, "-m", "launch.train", "--config", "configs/smoke.py"]
    cmd += ["--workdir", str(workdir), *overrides]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return {r["step"]: r for r in map(json.loads, f)}


def _resume_matches(tmp_path, steps, stop, mesh, devices):
    common = (f"--config.train.steps={steps}", "--config.train.log_every=4", mesh)
    train(
        tmp_path / "uninterrupted", *common, f"--config.train.sample_every={steps}", devices=devices
    )
    assert os.path.isfile(tmp_path / "uninterrupted" / "samples" / f"step_{steps:07d}.png")
    assert os.path.isfile(tmp_path / "uninterrupted" / "bundle" / "bundle.json")  # exported
    train(tmp_path / "resumed", *common, f"--config.train.stop_after_steps={stop}", devices=devices)
    stopped = metrics(tmp_path / "resumed")
    assert max(stopped) == stop
    assert os.path.isdir(tmp_path / "resumed" / "checkpoints" / str(stop))
    train(tmp_path / "resumed", *common, devices=devices)
    a, b = metrics(tmp_path / "uninterrupted"), metrics(tmp_path / "resumed")
    assert abs(a[steps]["loss"] - b[steps]["loss"]) <= 1e-5, (a[steps], b[steps])
    assert a[steps]["loss"] < a[4]["loss"]  # it learns
    return a


def test_resume_equals_uninterrupted(tmp_path):
    # 2 devices (fsdp 2) keep this in the default suite; the slow test below is the full check.
    _resume_matches(tmp_path, steps=8, stop=4, mesh=MESH_1x2, devices=2)


@pytest.mark.slow
def test_resume_equals_uninterrupted_24_steps_8_devices(tmp_path):
    _resume_matches(tmp_path, steps=24, stop=12, mesh=MESH_2x4, devices=8)


def test_bad_configs_fail_before_compute(tmp_path):
    proc = train(tmp_path / "a", "--config.train.batch_size=6", MESH_2x4, check=False)
    assert proc.returncode != 0 and "not divisible by the data-parallel size 8" in proc.stderr
    proc = train(tmp_path / "b", "--config.no_such_field=1", check=False)
    assert proc.returncode != 0 and "no_such_field" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = train(
        tmp_path / "c",
        "--config.data.source=shards",
        f"--config.data.path={tmp_path / 'empty'}",
        devices=1,
        check=False,
    )
    assert proc.returncode != 0 and "no ArrayRecord shards match" in proc.stderr


def test_incompatible_workdir_is_refused(tmp_path):
    # A workdir with a checkpoint of the smoke config (written directly: no training needed).
    checkpoints = TrainCheckpoints(str(tmp_path), asynchronous=False)
    checkpoints.check_config(smoke.get_config())
    checkpoints.save(2, {"x": np.zeros(2, np.float32)}, {})
    checkpoints.close()
    proc = train(
        tmp_path, "--config.train.steps=4", "--config.model.num_layers=2", devices=1, check=False
    )
    assert proc.returncode != 0
    assert "incompatible config" in proc.stderr and "model.num_layers: 1 -> 2" in proc.stderr


def test_sigterm_becomes_the_stop_flag():
    """SIGTERM sets the flag the loop checks between steps; that flag and stop_after_steps share
    one branch (save, then exit), which test_resume_equals_uninterrupted runs end to end. The
    slow test below sends a real SIGTERM to a training run."""
    code = (
        "import os, signal\n"
        "from launch.train import Preemption\n"
        "p = Preemption()\n"
        "before = p.requested\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "print(before, p.requested)\n"
    )
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]  # the handler replaced the default (death)
    assert proc.stdout.split() == ["False", "True"]


@pytest.mark.slow
def test_sigterm_saves_and_resume_continues(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    cmd = [
        sys.executable,
        "-m",
        "launch.train",
        "--config",
        "configs/smoke.py",
        "--workdir",
        str(tmp_path),
        "--config.train.steps=2000",
        "--config.train.log_every=1",
        "--config.train.checkpoint_every=100000",
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    metrics_path = tmp_path / "metrics.jsonl"
    deadline = time.time() + 900
    while not (metrics_path.exists() and metrics_path.read_text().count("\n") >= 3):
        assert time.time() < deadline and proc.poll() is None, "training did not start"
        time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=300)
    assert proc.returncode == 0
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert len(saved) == 1 and 3 <= saved[0] < 2000
    proc = train(
        tmp_path, "--config.train.steps=" + str(saved[0] + 2), "--config.train.log_every=1"
    )
    assert f"Resumed from step {saved[0]}" in proc.stderr


def test_warm_start_from_a_bundle_loads_its_weights_into_distinct_buffers(smoke_bundle):
    import jax

    from editmgt_jax.checkpoint.bundle import load_bundle
    from editmgt_jax.models.transformer import Transformer, example_inputs
    from editmgt_jax.models.transformer_config import TransformerConfig
    from editmgt_jax.sharding import create_mesh
    from editmgt_jax.training.optimizer import make_optimizer
    from editmgt_jax.training.train_state import create_sharded_train_state, warm_start

    config = smoke.get_config()
    cfg = TransformerConfig.from_dict(config.model)
    mesh = create_mesh((1, 1, 1), devices=jax.devices()[:1])
    sample = example_inputs(cfg, batch=1, grid=(4, 4), text_len=4)
    state, shardings = create_sharded_train_state(
        Transformer(cfg), make_optimizer(config.optim, 4), jax.random.key(99), sample, mesh
    )
    state = warm_start(smoke_bundle, cfg, state, shardings)
    expected = load_bundle(smoke_bundle).transformer_params
    for tree in (state.params, state.ema_params):
        jax.tree.map(np.testing.assert_array_equal, tree, expected)
    # The train step donates the state: a buffer shared by params and EMA would be donated twice.
    jax.block_until_ready(jax.jit(lambda s: s, donate_argnums=0)(state))
