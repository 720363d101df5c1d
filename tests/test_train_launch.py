"""launch.train end to end: resume equals uninterrupted on 8 simulated devices; bad configs fail early."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from configs import smoke
from editmgt_jax.checkpoint.manager import TrainCheckpoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESH_2x4 = "--config.mesh.ici_parallelism=(2, 4, 1)"
MESH_1x2 = "--config.mesh.ici_parallelism=(1, 2, 1)"


def train(workdir, *overrides, devices=8, check=True, timeout=1200):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    cmd = [sys.executable, "-m", "launch.train", "--config", "configs/smoke.py"]
    cmd += ["--workdir", str(workdir), *overrides]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return {r["step"]: r for r in map(json.loads, f)}


def _resume_matches(tmp_path, steps, stop, mesh, devices):
    """One run of `steps` that also saves at `stop`; a copy of its workdir cut back to what an
    interruption just after that save leaves (no later checkpoint, metrics, samples or bundle),
    resumed and stopped again halfway to `steps` by stop_after_steps (the save-then-exit branch a
    SIGTERM takes too): the same loss there as the run that was never interrupted. Then resumed
    from that stop save to the end: the same losses, the same exported (EMA) weights and the same
    data iterator position as the uninterrupted run."""
    common = (
        f"--config.train.steps={steps}",
        "--config.train.log_every=2",
        f"--config.train.checkpoint_every={stop}",
        "--config.train.keep_checkpoints=8",
        mesh,
    )
    uninterrupted, resumed = tmp_path / "uninterrupted", tmp_path / "resumed"
    train(uninterrupted, *common, f"--config.train.sample_every={steps}", devices=devices)
    assert os.path.isfile(uninterrupted / "samples" / f"step_{steps:07d}.png")
    assert os.path.isfile(uninterrupted / "bundle" / "bundle.json")  # exported
    shutil.copytree(uninterrupted, resumed)
    assert stop in _saved(resumed) and max(_saved(resumed)) == steps
    for step in _saved(resumed):
        if step > stop:
            shutil.rmtree(resumed / "checkpoints" / str(step))
    for name in ("samples", "bundle"):
        shutil.rmtree(resumed / name)
    lines = (resumed / "metrics.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["step"] <= stop]
    (resumed / "metrics.jsonl").write_text("".join(line + "\n" for line in kept))
    halfway = stop + (steps - stop) // 2  # not a checkpoint_every step: the stop saves it
    proc = train(resumed, *common, f"--config.train.stop_after_steps={halfway}", devices=devices)
    assert f"Resumed from step {stop}" in proc.stderr
    assert max(_saved(resumed)) == halfway and max(metrics(resumed)) == halfway
    assert not (resumed / "bundle").exists()  # stopped early: nothing exported
    a, b = metrics(uninterrupted), metrics(resumed)
    assert abs(a[halfway]["loss"] - b[halfway]["loss"]) <= 1e-5, (a[halfway], b[halfway])
    assert a[steps]["loss"] < a[2]["loss"]  # it learns
    # On from the stop save (not a periodic one) to the end: its weights, EMA and data position.
    proc = train(resumed, *common, devices=devices)
    assert f"Resumed from step {halfway}" in proc.stderr
    b = metrics(resumed)
    assert max(b) == steps
    for step in (s for s in a if s > halfway):
        assert abs(a[step]["loss"] - b[step]["loss"]) <= 1e-5, (step, a[step], b[step])
    # The bundle holds the EMA weights: a resume that dropped the EMA exports others.
    weights = [
        load_file(str(w / "bundle" / "transformer.safetensors")) for w in (uninterrupted, resumed)
    ]
    assert sorted(weights[0]) == sorted(weights[1])
    for name in weights[0]:
        np.testing.assert_allclose(weights[1][name], weights[0][name], atol=1e-6, err_msg=name)
    # The data iterator's position saved with the last step: a stale position in the stop save
    # would have re-read a batch.
    assert _data_state(resumed, steps) == _data_state(uninterrupted, steps)
    return a


def _data_state(workdir, step):
    """The data iterator's state in checkpoint `step` (orbax's JSON item `data`)."""
    with open(workdir / "checkpoints" / str(step) / "data" / "metadata") as f:
        state = json.load(f)
    assert state  # a real position, not the empty dict saved without a loader state
    return state


def _saved(workdir):
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


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


def test_consecutive_nonfinite_steps_stop_with_the_last_good_checkpoint_intact(tmp_path):
    """A learning rate of 1e30 (after a warm-up step at 0): step 2's update leaves weights whose
    every later loss is non-finite, so steps 3, 4, ... are skipped (not counted, not saved) until
    max_consecutive_nonfinite (5) in a row stop the run, the checkpoint of step 2 as it was."""
    proc = train(
        tmp_path,
        "--config.train.steps=12",
        "--config.train.log_every=1",
        "--config.train.checkpoint_every=1",
        "--config.train.keep_checkpoints=20",
        "--config.optim.learning_rate=1e30",
        devices=1,
        check=False,
        timeout=600,  # the loop would never end if the limit were ignored: skips do not count
    )
    assert proc.returncode != 0
    assert "FloatingPointError: 5 steps in a row had a non-finite loss" in proc.stderr
    assert "The last good checkpoint (step 2) is intact" in proc.stderr
    assert _saved(tmp_path) == [1, 2]
    # Skipped steps log nothing: one finite record per step that ran.
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert all(np.isfinite(r["loss"]) for r in records)
    assert not (tmp_path / "bundle").exists()
    import jax
    import orbax.checkpoint as ocp

    state = ocp.StandardCheckpointer().restore(tmp_path / "checkpoints" / "2" / "state")
    assert int(state["step"]) == 2 and int(state["consecutive_skips"]) == 0
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state))
    assert _data_state(tmp_path, 2)


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


def test_warm_start_loads_a_bundle_into_distinct_buffers_and_the_shapes_match(smoke_bundle):
    import jax

    from editmgt_jax.checkpoint.bundle import load_bundle
    from editmgt_jax.models.transformer import Transformer, example_inputs
    from editmgt_jax.models.transformer_config import TransformerConfig
    from editmgt_jax.sharding import create_mesh
    from editmgt_jax.training.optimizer import make_optimizer
    from editmgt_jax.training.train_state import (
        create_sharded_train_state,
        train_state_shapes,
        warm_start,
    )

    config = smoke.get_config()
    cfg = TransformerConfig.from_dict(config.model)
    mesh = create_mesh((1, 1, 1), devices=jax.devices()[:1])
    sample = example_inputs(cfg, batch=1, grid=(4, 4), text_len=4)
    args = (Transformer(cfg), make_optimizer(config.optim, 4), jax.random.key(99), sample, mesh)
    state, shardings = create_sharded_train_state(*args)
    # What a resumed or exporting run restores into: the same tree, shapes, dtypes and shardings.
    shaped, same_shardings = train_state_shapes(*args)
    assert same_shardings == shardings
    created = jax.tree_util.tree_flatten_with_path(state)[0]
    assert [(p, x.shape, x.dtype, x.sharding) for p, x in created] == [
        (p, x.shape, x.dtype, x.sharding)
        for p, x in jax.tree_util.tree_flatten_with_path(shaped)[0]
    ]
    state = warm_start(smoke_bundle, cfg, state, shardings)
    expected = load_bundle(smoke_bundle).transformer_params
    for tree in (state.params, state.ema_params):
        jax.tree.map(np.testing.assert_array_equal, tree, expected)
    # The train step donates the state: a buffer shared by params and EMA would be donated twice.
    jax.block_until_ready(jax.jit(lambda s: s, donate_argnums=0)(state))
