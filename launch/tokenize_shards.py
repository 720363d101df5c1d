r"""Pre-encodes the source and target images of edit-record shards with a VQ tokenizer.

  python -m launch.tokenize_shards --shards /data/crispedit_ar --vq /ckpt/vq \
      --out /data/crispedit_tokens --resolution 512 --batch_size 64

Each record gets `source_tokens`/`target_tokens` [resolution/stride]^2 of its centred joint crop at
`--resolution` (the images are kept, so the loader can read either). Encoding is one jitted
function, batch split over all local devices. Output shards keep their names, are written
atomically and are skipped when already there, so a stopped job resumes shard by shard.

Multi-host (a TPU pod slice, a GPU cluster): run the same command on every host with the flags of
launch.train (`--distributed` on TPU; elsewhere `--coordinator_address=host0:1234
--num_processes=N --process_id=i`). Process i tokenizes every N-th shard of the sorted list
(from i), so each shard is tokenized by exactly one process; each writes its counts to
`<out>/.tokenize-process-<i>-of-<N>.json`, and after a barrier process 0 prints one final JSON
line for all of them: `written`, `skipped`, `shards`, `shards_skipped`, `token_shape`, ...
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator

import jax
import numpy as np
from absl import app, flags, logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from data_pipelines import transforms
from data_pipelines.array_record_io import list_shards, read_all, write_shard
from data_pipelines.schema import EditRecord, SchemaError, decode_record, encode_record
from editmgt_jax import paths
from launch import cli

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "shards", None, "Folder, gs:// prefix or glob of edit-record ArrayRecord shards."
)
flags.DEFINE_string(
    "vq", None, "VQ checkpoint: a diffusers-layout folder, or a bundle (its VQ), read by load_vq."
)
flags.DEFINE_string("out", None, "Output folder (or gs:// prefix) for the token shards.")
flags.DEFINE_integer("resolution", 256, "Square crop side in pixels (multiple of the VQ stride).")
flags.DEFINE_integer("batch_size", 32, "Images per encode call (rounded up to the devices).")
flags.mark_flags_as_required(["shards", "vq", "out"])
cli.define_distributed_flags(__name__)  # the same multi-host flags as launch.train


@dataclasses.dataclass
class _Pending:
    record: EditRecord
    source: np.ndarray  # uint8 [R, R, 3]
    target: np.ndarray


def _decoded(records: list[bytes], size: tuple[int, int], skipped: list[str]) -> Iterator[_Pending]:
    for data in records:
        try:
            record = decode_record(data)
            source = transforms.decode_image(record.source, max(size))
            target = transforms.decode_image(record.target, max(size))
        except (SchemaError, transforms.DecodeError) as err:
            skipped.append(str(err))
            continue
        source, target, _ = transforms.joint_resize_crop(source, target, None, size)
        yield _Pending(record, source, target)


def make_encoder(model, params, batch: int):
    """Jitted `images uint8 [batch, R, R, 3] -> ids int32 [batch, h, w]`, data-parallel."""
    mesh = Mesh(np.array(jax.local_devices()), ("data",))
    data = NamedSharding(mesh, PartitionSpec("data"))
    replicated = NamedSharding(mesh, PartitionSpec())
    params = jax.device_put(params, replicated)

    @jax.jit
    def encode(p, images):
        scaled = images.astype(np.float32) / 255.0
        return model.apply({"params": p}, scaled, method=model.encode_to_ids)

    def run(images: np.ndarray) -> np.ndarray:
        if images.shape[0] != batch:
            raise ValueError(f"encoder built for batch {batch}, got {images.shape[0]}")
        return np.asarray(encode(params, jax.device_put(images, data)))

    return run


def tokenize_shard(
    in_path: str, out_path: str, encode, batch: int, size: tuple[int, int], dtype
) -> tuple[int, list[str]]:
    """Writes `in_path`'s records with tokens to `out_path`; returns (written, skip messages)."""
    skipped: list[str] = []
    pending = list(_decoded(read_all([in_path]), size, skipped))
    half = batch // 2  # sources and targets share one encode call

    def records() -> Iterator[bytes]:
        for start in range(0, len(pending), half):
            chunk = pending[start : start + half]
            images = np.zeros((batch, *size, 3), np.uint8)  # padded: one compiled shape
            for i, item in enumerate(chunk):
                images[i], images[half + i] = item.source, item.target
            ids = encode(images)
            for i, item in enumerate(chunk):
                yield encode_record(
                    dataclasses.replace(
                        item.record,
                        source_tokens=ids[i].astype(dtype),
                        target_tokens=ids[half + i].astype(dtype),
                    )
                )

    return write_shard(out_path, records()), skipped


def process_summary_path(out: str, index: int, count: int) -> str:
    """Where process `index` of `count` writes its counts (hidden: not a shard)."""
    return paths.join(out, f".tokenize-process-{index:05d}-of-{count:05d}.json")


def combine(summaries: list[dict]) -> dict:
    """The final summary of all processes' summaries (counts add up; the rate is of the job)."""
    written = sum(s["written"] for s in summaries)
    seconds = max(s["seconds"] for s in summaries)
    return {
        "written": written,
        "skipped": sum(s["skipped"] for s in summaries),
        "shards": sum(s["shards"] for s in summaries),
        "shards_skipped": sum(s["shards_skipped"] for s in summaries),
        "token_shape": summaries[0]["token_shape"],
        "records_per_s": round(written / seconds, 2) if seconds > 0 else None,
        "devices": sum(s["devices"] for s in summaries),
        "processes": len(summaries),
    }


def main(argv: list[str]) -> None:
    del argv
    cli.initialize_distributed()  # before anything touches a JAX backend
    from editmgt_jax.checkpoint import load_vq

    model, params = load_vq(paths.local_copy(FLAGS.vq))  # a gs:// VQ/bundle: a cached copy
    stride = model.config.stride
    if FLAGS.resolution % stride:
        raise app.UsageError(f"--resolution {FLAGS.resolution} is not a multiple of {stride}")
    devices = jax.local_device_count()
    # Even, and a multiple of the devices: half sources, half targets, split over devices.
    unit = 2 * devices // np.gcd(2, devices)
    batch = max(unit, -(-FLAGS.batch_size // unit) * unit)
    size = (FLAGS.resolution, FLAGS.resolution)
    dtype = np.int16 if model.config.num_vq_embeddings <= np.iinfo(np.int16).max else np.int32
    encode = make_encoder(model, params, batch)
    index, count = jax.process_index(), jax.process_count()
    # Every process lists the same (shared) folder and sorts it: the strided slices partition it.
    shards = list_shards(FLAGS.shards)[index::count]
    paths.makedirs(FLAGS.out)  # a folder; nothing for a gs:// URL
    manifest = {
        "vq": paths.abspath(FLAGS.vq),
        "resolution": FLAGS.resolution,
        "stride": stride,
        "token_shape": [FLAGS.resolution // stride] * 2,
        "crop": "centre, joint (data_pipelines.transforms.joint_resize_crop)",
    }
    if index == 0:
        paths.write_atomic(
            paths.join(FLAGS.out, "tokenize.json"), json.dumps(manifest, indent=1, sort_keys=True)
        )
    written, reused, skipped, start = 0, 0, 0, time.perf_counter()
    tokenized = []
    for in_path in shards:
        out_path = paths.join(FLAGS.out, paths.basename(in_path))
        if paths.exists(out_path):
            reused += 1
            continue
        count_written, messages = tokenize_shard(in_path, out_path, encode, batch, size, dtype)
        written += count_written
        skipped += len(messages)
        tokenized.append(paths.basename(in_path))
        for message in messages[:3]:
            logging.warning("skipped a record of %s: %s", in_path, message)
    mine = {
        "process": index,
        "written": written,
        "skipped": skipped,
        "shards": len(shards),
        "shards_skipped": reused,
        "tokenized": tokenized,
        "token_shape": manifest["token_shape"],
        "seconds": time.perf_counter() - start,
        "devices": devices,
    }
    if count == 1:
        print(json.dumps(combine([mine])))
        return
    paths.write_atomic(
        process_summary_path(FLAGS.out, index, count), json.dumps(mine, sort_keys=True)
    )
    # Every process has written its file once all have reached this barrier.
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("tokenize_shards: summaries written")
    if index == 0:
        summaries = []
        for i in range(count):
            summaries.append(json.loads(paths.read_text(process_summary_path(FLAGS.out, i, count))))
        print(json.dumps(combine(summaries)))


def run():
    """The console script (pyproject.toml): the same absl main as `python -m`."""
    cli.run_main(main)


if __name__ == "__main__":
    run()
