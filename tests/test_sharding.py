"""Sharded forward on 8 simulated CPU devices equals the single-device forward."""

import json
import os
import subprocess
import sys

import jax
import pytest
from jax.sharding import PartitionSpec

from editmgt_jax import sharding

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_on_8_devices(module: str, *args: str) -> dict:
    """`python -m module *args` on 8 simulated CPU devices; its last stdout line as JSON."""
    # LLVM's lowest level, as tests/conftest.py sets for the test processes: these programs run
    # a few times, so compiling is most of their cost.
    flags = "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
    env = dict(os.environ, XLA_FLAGS=flags, PYTHONPATH=REPO)
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def result():
    return run_on_8_devices("tests.multidevice.sharded_forward")


def test_sharded_equals_single_device(result):
    assert result["logits_err"] < 1e-4
    assert result["capture_err"] < 1e-5
    assert result["batch_err"] < 1e-4


def test_splash_kernel_runs_per_shard(result):
    # The Pallas kernel is opaque to XLA's partitioner: it must run inside shard_map.
    assert result["splash_in_shard_map"]
    assert result["splash_err"] < 1e-4


def test_weights_are_split(result):
    # Every kernel is split on fsdp x tensor; only tiny norm gains may stay replicated.
    assert result["num_split"] > result["num_params"] // 2


def test_params_are_created_sharded(result):
    assert result["created_num_params"] == 609_408
    assert result["created_replicated"] == []


def test_no_large_weight_replicated_under_fsdp(result):
    assert result["num_params_40m"] > 35e6
    assert result["replicated_large"] == []


def test_replicated_large_weight_fails_the_check(result):
    # On 8 devices: a split 1 MiB kernel passes, a replicated one beside it fails, by name.
    assert result["replicated_error"] is not None
    assert "1 large arrays are fully replicated" in result["replicated_error"]
    assert "['head']['kernel']" in result["replicated_error"]
    assert "['block']" not in result["replicated_error"]


def test_replicated_check_on_one_device():
    # One device holds every array whole: large ones fail, those under min_bytes pass.
    params = {"big": jax.numpy.zeros((512, 512)), "small": jax.numpy.zeros((8, 8))}
    with pytest.raises(AssertionError, match=r"\['big'\]"):
        sharding.assert_params_sufficiently_sharded(params)
    sharding.assert_params_sufficiently_sharded({"small": params["small"]})
    assert sharding.fully_replicated_large_arrays(params, min_bytes=256) == ["['big']", "['small']"]


def test_logical_spec_falls_back_when_not_divisible():
    mesh = sharding.create_mesh([1, 1, 1], devices=jax.devices()[:1])
    assert sharding.logical_to_mesh_spec(("embed", "mlp"), (6, 10), mesh) == PartitionSpec(
        None, None
    )


def test_resolve_parallelism_errors():
    assert sharding.resolve_parallelism([-1, 4, 2], 8, "ici") == [1, 4, 2]
    with pytest.raises(ValueError, match="does not divide"):
        sharding.resolve_parallelism([-1, 3, 1], 8, "ici")
    with pytest.raises(ValueError, match="at most one -1"):
        sharding.resolve_parallelism([-1, -1, 1], 8, "ici")
    with pytest.raises(ValueError, match="uses 4 devices"):
        sharding.resolve_parallelism([1, 4, 1], 8, "ici")
