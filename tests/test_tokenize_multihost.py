"""launch.tokenize_shards on two CPU processes (jax.distributed, gloo): together they tokenize
every shard exactly once, to the same bytes as one process, resume shard by shard, and process 0
reports the job's totals."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines.array_record_io import list_shards, read_all, shard_name, write_shard
from data_pipelines.schema import decode_record
from data_pipelines.synthetic.source import SyntheticSource
from editmgt_jax.checkpoint import save_vq
from editmgt_jax.models.vq import VQConfig, VQModel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = VQConfig(
    block_out_channels=(8, 16, 16), layers_per_block=1, norm_num_groups=4, latent_channels=4,
    num_vq_embeddings=16,
)  # fmt: skip
NUM_SHARDS, PER_SHARD = 5, 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def make_inputs(tmp_path) -> tuple[str, str]:
    """A tiny random VQ (stride 4) and NUM_SHARDS shards of 32 px synthetic edits."""
    model = VQModel(TINY)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(
        lambda s: (rng.normal(size=s.shape) * 0.2).astype(s.dtype), shapes
    )
    save_vq(str(tmp_path / "vq"), model, params)
    source = SyntheticSource(seed=1, num=NUM_SHARDS * PER_SHARD, size=32)
    for shard in range(NUM_SHARDS):
        path = tmp_path / "shards" / shard_name("synthetic", "train", shard, NUM_SHARDS)
        write_shard(str(path), (source[shard * PER_SHARD + i] for i in range(PER_SHARD)))
    return str(tmp_path / "vq"), str(tmp_path / "shards")


def tokenize(vq: str, shards: str, out, processes: int) -> list[str]:
    """Runs launch.tokenize_shards as `processes` processes; their stdouts."""
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"  # same batch in every run
    args = [sys.executable, "-m", "launch.tokenize_shards", "--shards", shards, "--vq", vq,
            "--out", str(out), "--resolution", "32", "--batch_size", "4"]  # fmt: skip
    if processes > 1:
        port = free_port()
        args += [f"--coordinator_address=localhost:{port}", f"--num_processes={processes}"]
    procs = [
        subprocess.Popen(
            args + ([f"--process_id={i}"] if processes > 1 else []),
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-4000:]
    return [stdout for stdout, _ in outs]


def final_line(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_two_processes_tokenize_every_shard_once_like_one_process(tmp_path):
    vq, shards = make_inputs(tmp_path)
    names = [os.path.basename(p) for p in list_shards(shards)]
    alone = final_line(tokenize(vq, shards, tmp_path / "one", 1)[0])
    assert alone["written"] == NUM_SHARDS * PER_SHARD and alone["processes"] == 1

    two = tmp_path / "two"
    first, second = tokenize(vq, shards, two, 2)
    assert '"written"' not in second  # process 0 reports for both (gloo prints a line here)
    summary = final_line(first)
    assert summary["written"] == NUM_SHARDS * PER_SHARD and summary["shards"] == NUM_SHARDS
    assert (summary["processes"], summary["devices"], summary["shards_skipped"]) == (2, 2, 0)
    done = []
    for i in range(2):
        with open(two / f".tokenize-process-{i:05d}-of-00002.json") as f:
            done.append(json.load(f)["tokenized"])
    assert not set(done[0]) & set(done[1]) and sorted(done[0] + done[1]) == names
    assert done[0] == names[0::2] and done[1] == names[1::2]
    # The same records, token for token, as one process wrote.
    for name in names:
        assert (two / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    assert all(
        decode_record(d).source_tokens.shape == (8, 8) for d in read_all([str(two / names[0])])
    )

    # Stopped before it wrote one shard (process 1's): only that one is tokenized again.
    lost = two / names[3]
    os.remove(lost)
    again = final_line(tokenize(vq, shards, two, 2)[0])
    assert (again["written"], again["shards_skipped"]) == (PER_SHARD, NUM_SHARDS - 1)
    assert lost.read_bytes() == (tmp_path / "one" / names[3]).read_bytes()
