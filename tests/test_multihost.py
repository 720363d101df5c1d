"""Two local CPU processes (4 devices each) train, checkpoint and resume together.

Slow (each process compiles the step): `python -m pytest -m slow tests/test_multihost.py`.
"""

import json
import os
import socket
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_two_processes(workdir, *overrides):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    port = free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "launch.train",
                "--config",
                "configs/smoke.py",
                "--workdir",
                str(workdir),
                "--config.mesh.ici_parallelism=(2, 4, 1)",
                f"--coordinator_address=localhost:{port}",
                "--num_processes=2",
                f"--process_id={i}",
                *overrides,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=1800) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-4000:]
    return outs


@pytest.mark.slow
def test_two_processes_train_checkpoint_and_resume(tmp_path):
    common = ("--config.train.steps=4", "--config.train.log_every=2")
    run_two_processes(tmp_path, *common, "--config.train.stop_after_steps=2")
    assert os.path.isdir(tmp_path / "checkpoints" / "2")
    outs = run_two_processes(tmp_path, *common)
    assert all("Resumed from step 2" in err for _, err in outs)
    with open(tmp_path / "metrics.jsonl") as f:
        steps = [json.loads(line)["step"] for line in f]
    assert steps == [2, 4]  # written by process 0 only
    assert os.path.isdir(tmp_path / "checkpoints" / "4")
