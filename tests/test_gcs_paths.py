"""Cloud Storage paths against a local GCS API (gcp-storage-emulator on 127.0.0.1): the path layer,
a training run whose workdir is gs://bucket/run (stopped, resumed, bundle exported, read back),
and the loader and launch.tokenize_shards reading shards from the bucket."""

import atexit
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import fsspec
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines.array_record_io import list_shards, read_all, shard_name, write_shard
from data_pipelines.loader import EditLoader, LoaderConfig
from data_pipelines.schema import decode_record
from data_pipelines.synthetic.source import SyntheticSource
from editmgt_jax import paths

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "editmgt-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    """A local GCS API on 127.0.0.1, and the env that points gcsfs, orbax's tensorstore and
    ArrayRecord's reader at it (no credentials)."""
    port = _free_port()  # the emulator with GCS's generation semantics (tests/gcs_emulator.py)
    cmd = [sys.executable, os.path.join(REPO, "tests", "gcs_emulator.py"), str(port), BUCKET]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b/{BUCKET}", timeout=1).read()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("gcp-storage-emulator did not start")
    env = dict(
        STORAGE_EMULATOR_HOST=url,  # gcsfs (fsspec, orbax's epath)
        TENSORSTORE_GCS_HTTP_URL=url,  # orbax's array writes
        GOOGLE_AUTH_TOKEN_FOR_TESTING="emulator",  # tensorstore: no credentials lookup
        CLOUD_STORAGE_EMULATOR_ENDPOINT=url,  # ArrayRecord's reader (google-cloud-cpp)
        FSSPEC_GS_TOKEN="anon",
        EDITMGT_CACHE=str(tmp_path_factory.mktemp("cache")),
    )
    yield env
    # Stopped at exit, after Python joined its threads: grain's prefetch threads may still be
    # reading the bucket, and against a stopped server those reads retry for minutes.
    atexit.register(proc.terminate)


@pytest.fixture
def gcs(emulator, monkeypatch):
    """This process pointed at the emulator (fsspec read FSSPEC_GS_TOKEN at import: set it)."""
    for key, value in emulator.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setitem(fsspec.config.conf, "gs", {"token": "anon"})
    paths.register_gcs()
    fsspec.filesystem("gs").invalidate_cache()
    return emulator


def _subprocess_env(emulator, devices=1):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", **emulator)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def test_path_layer_on_the_bucket(gcs, tmp_path):
    # The JSON-API client: gcsfs's default class would spend 60 s per call on a gRPC probe.
    assert type(fsspec.filesystem("gs")).__module__ == "gcsfs.core"
    start = time.perf_counter()
    base = f"gs://{BUCKET}/layer"
    assert paths.is_url(base) and not paths.is_url(str(tmp_path))
    assert paths.join(base, "a", "b.json") == f"{base}/a/b.json"
    paths.makedirs(base)  # nothing to create
    paths.write_atomic(paths.join(base, "a", "b.json"), '{"x": 1}')
    assert json.loads(paths.read_text(f"{base}/a/b.json")) == {"x": 1}
    assert paths.isfile(f"{base}/a/b.json") and paths.isdir(f"{base}/a")
    assert not paths.exists(f"{base}/missing") and not paths.isfile(f"{base}/a")
    paths.append_text(f"{base}/log.jsonl", "1\n")
    paths.append_text(f"{base}/log.jsonl", "2\n")
    assert paths.read_text(f"{base}/log.jsonl") == "1\n2\n"
    assert paths.listdir(base) == ["a", "log.jsonl"]
    assert paths.glob(f"{base}/*.jsonl") == [f"{base}/log.jsonl"]
    with paths.local_file_for(f"{base}/w.bin") as tmp:
        with open(tmp, "wb") as f:
            f.write(b"abc")
    with paths.open_file(f"{base}/w.bin", "rb") as f:
        assert f.read() == b"abc"

    # A folder published over an older one: new files, stale ones gone, the marker last.
    for version, names in ((1, ["m.json", "old.bin", "sub/x"]), (2, ["m.json", "sub/x"])):
        local = tmp_path / f"v{version}"
        for name in names:
            (local / name).parent.mkdir(parents=True, exist_ok=True)
            (local / name).write_text(f"{name} v{version}")
        paths.publish_folder(str(local), f"{base}/folder", last="m.json")
        assert not local.exists()
    fs = fsspec.filesystem("gs")
    assert sorted(fs.find(f"{base}/folder")) == [
        f"{BUCKET}/layer/folder/m.json",
        f"{BUCKET}/layer/folder/sub/x",
    ]
    copy = paths.local_copy(f"{base}/folder")
    assert open(os.path.join(copy, "sub", "x")).read() == "sub/x v2"
    assert paths.local_copy(f"{base}/folder") == copy  # unchanged: the cached copy
    paths.write_atomic(f"{base}/folder/sub/x", "changed!")
    assert open(os.path.join(paths.local_copy(f"{base}/folder"), "sub", "x")).read() == "changed!"
    paths.rmtree(base)
    assert not paths.exists(f"{base}/a/b.json")
    assert time.perf_counter() - start < 30


def test_training_workdir_in_the_bucket_stops_resumes_and_exports(gcs):
    workdir = f"gs://{BUCKET}/run"
    cmd = [sys.executable, "-m", "launch.train", "--config", "configs/smoke.py"]
    cmd += ["--workdir", workdir, "--config.train.steps=4", "--config.train.log_every=1"]
    cmd += ["--config.train.checkpoint_every=100"]
    env = _subprocess_env(gcs)
    run = lambda *extra: subprocess.run(
        [*cmd, *extra], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    first = run("--config.train.stop_after_steps=2")
    assert first.returncode == 0, first.stderr[-4000:]
    assert not os.path.exists(os.path.join(REPO, "gs:"))  # no local folder named after the URL
    fs = fsspec.filesystem("gs")
    fs.invalidate_cache()
    assert fs.isfile(f"{workdir}/config.json") and fs.isdir(f"{workdir}/checkpoints/2")
    assert not fs.exists(f"{workdir}/bundle")  # stopped before the end: no export yet
    steps = [
        json.loads(line)["step"]
        for line in paths.read_text(f"{workdir}/metrics.jsonl").splitlines()
    ]
    assert steps == [1, 2]
    assert any("tfevents" in name for name in paths.listdir(f"{workdir}/tb"))

    second = run()
    assert second.returncode == 0, second.stderr[-4000:]
    assert f"Resumed from step 2 in {workdir}" in second.stderr
    fs.invalidate_cache()
    steps = [
        json.loads(line)["step"]
        for line in paths.read_text(f"{workdir}/metrics.jsonl").splitlines()
    ]
    assert steps == [1, 2, 3, 4]
    assert fs.isdir(f"{workdir}/checkpoints/4")
    from editmgt_jax.checkpoint.bundle import is_bundle, load_bundle

    assert is_bundle(f"{workdir}/bundle")
    bundle = load_bundle(f"{workdir}/bundle")
    assert bundle.metadata["trained_steps"] == 4
    assert bundle.path.startswith(gcs["EDITMGT_CACHE"])  # read from its cached local copy


def _tiny_vq(folder: str):
    from editmgt_jax.checkpoint import save_vq
    from editmgt_jax.models.vq import VQConfig, VQModel

    config = VQConfig(
        block_out_channels=(8, 16, 16), layers_per_block=1, norm_num_groups=4, latent_channels=4,
        num_vq_embeddings=16,
    )  # fmt: skip
    model = VQModel(config)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(
        lambda s: (rng.normal(size=s.shape) * 0.2).astype(s.dtype), shapes
    )
    save_vq(folder, model, params)


def test_loader_and_tokenize_shards_read_shards_from_the_bucket(gcs, tmp_path):
    source = SyntheticSource(seed=0, num=5, size=32)
    shards = f"gs://{BUCKET}/shards"
    for shard in range(2):  # written straight to the bucket (local temp file, one upload)
        path = paths.join(shards, shard_name("synthetic", "train", shard, 2))
        write_shard(path, (source[i] for i in range(shard * 3, min(5, shard * 3 + 3))))
    listed = list_shards(shards)
    assert [paths.basename(p) for p in listed] == [
        shard_name("synthetic", "train", i, 2) for i in (0, 1)
    ]
    assert all(p.startswith("gs://") for p in listed)
    ids = [decode_record(source[i]).id for i in range(5)]
    assert [decode_record(d).id for d in read_all(listed)] == ids  # ArrayRecord reads gs://
    config = LoaderConfig(batch_size=2, seed=0, resolution=32)
    loader = EditLoader(shards, config, process_index=0, process_count=1)
    batch = next(loader)
    loader.close()
    assert batch["source"].shape == (2, 32, 32, 3)

    _tiny_vq(str(tmp_path / "vq"))
    tokens = f"gs://{BUCKET}/tokens"
    args = [sys.executable, "-m", "launch.tokenize_shards", "--shards", shards,
            "--vq", str(tmp_path / "vq"), "--out", tokens, "--resolution", "32",
            "--batch_size", "4"]  # fmt: skip
    env = _subprocess_env(gcs)
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["written"] == 5
    fsspec.filesystem("gs").invalidate_cache()
    assert paths.isfile(f"{tokens}/tokenize.json")
    records = [decode_record(d) for d in read_all(list_shards(tokens))]
    assert [r.id for r in records] == ids
    assert all(r.source_tokens.shape == (8, 8) for r in records)
    config = LoaderConfig(batch_size=2, seed=0, use_tokens=True)
    loader = EditLoader(tokens, config, process_index=0, process_count=1)
    batch = next(loader)
    loader.close()
    assert batch["source_tokens"].shape == (2, 8, 8)
