"""launch.tokenize_shards: token shards from a VQ checkpoint, readable by the loader."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import transforms
from data_pipelines.array_record_io import list_shards, read_all, shard_name, write_shard
from data_pipelines.loader import EditLoader, LoaderConfig
from data_pipelines.schema import decode_record
from data_pipelines.synthetic.source import SyntheticSource
from editmgt_jax.checkpoint import save_vq
from editmgt_jax.models.vq import VQConfig, VQModel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = VQConfig(
    block_out_channels=(8, 16, 16), layers_per_block=1, norm_num_groups=4, latent_channels=4,
    num_vq_embeddings=16,
)  # fmt: skip


def test_tokenize_shards_writes_tokens_the_loader_reads(tmp_path):
    model = VQModel(TINY)
    # Random weights of the right shapes: compiling `init` is slow on CPU and adds nothing here.
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(
        lambda s: (rng.normal(size=s.shape) * 0.2).astype(s.dtype), shapes
    )
    save_vq(str(tmp_path / "vq"), model, params)
    source = SyntheticSource(seed=0, num=5, size=32)
    for shard in range(2):
        path = tmp_path / "shards" / shard_name("synthetic", "train", shard, 2)
        write_shard(str(path), (source[i] for i in range(shard * 3, min(5, shard * 3 + 3))))
    args = [sys.executable, "-m", "launch.tokenize_shards", "--shards", str(tmp_path / "shards"),
            "--vq", str(tmp_path / "vq"), "--out", str(tmp_path / "tokens"), "--resolution", "32",
            "--batch_size", "4"]  # fmt: skip
    run = lambda: subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    result = run()
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["written"] == 5 and summary["token_shape"] == [8, 8]

    records = [decode_record(d) for d in read_all(list_shards(str(tmp_path / "tokens")))]
    assert [r.id for r in records] == [decode_record(source[i]).id for i in range(5)]
    encode = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.encode_to_ids))
    for record in records:
        assert record.source_tokens.shape == (8, 8) and record.source_tokens.dtype == np.int16
        image = transforms.decode_image(record.target)[None].astype(np.float32) / 255.0
        np.testing.assert_array_equal(record.target_tokens, np.asarray(encode(params, image))[0])

    again = json.loads(run().stdout.strip().splitlines()[-1])
    assert again["shards_skipped"] == 2 and again["written"] == 0

    config = LoaderConfig(batch_size=2, seed=0, use_tokens=True)
    batch = next(EditLoader(str(tmp_path / "tokens"), config, process_index=0, process_count=1))
    assert batch["source_tokens"].shape == (2, 8, 8) and batch["source_tokens"].dtype == np.int32
