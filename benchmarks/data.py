r"""Input pipeline throughput: records/s for decode + joint resize/crop, per resolution and workers.

  python -m benchmarks.data --resolutions 256,512,1024 --workers 1,2 --seconds 10

Records are photo-like JPEG pairs whose short side is the resolution (every other target 1.25x
larger, as in CrispEdit); each is decoded and jointly cropped to resolution x resolution by the
grain loader in `workers` worker processes. Worker start-up is excluded (timing starts after the
first batches). Prints one JSON object per configuration, with the machine's load average.
"""

from __future__ import annotations

import io
import json
import os
import platform
import time

import numpy as np
from absl import app, flags
from PIL import Image

from data_pipelines.fake_crispedit import photo
from data_pipelines.loader import EditLoader, LoaderConfig
from data_pipelines.schema import EditRecord, encode_record

FLAGS = flags.FLAGS
flags.DEFINE_list("resolutions", ["256", "512", "1024"], "Image short sides in pixels.")
flags.DEFINE_list(
    "workers", ["0", "1", "2"], "grain worker processes (0: threads in this process)."
)
flags.DEFINE_float("seconds", 10.0, "Timed seconds per configuration.")
flags.DEFINE_integer("records", 24, "Distinct records per resolution (repeated).")
flags.DEFINE_integer("batch_size", 4, "Batch size.")
flags.DEFINE_integer("seed", 0, "Image seed.")


def _jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_records(resolution: int, count: int, seed: int) -> list[bytes]:
    """`count` serialized records of JPEG pairs with short side `resolution`."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        source = photo(rng, resolution, resolution * 5 // 4)
        scale = 1.25 if i % 2 else 1.0
        size = (round(resolution * 5 // 4 * scale), round(resolution * scale))
        target = np.asarray(Image.fromarray(255 - source).resize(size, Image.Resampling.BICUBIC))
        record = EditRecord(_jpeg(source), _jpeg(target), "invert it", "style", f"bench-{i}")
        records.append(encode_record(record))
    return records


def measure(records: list[bytes], resolution: int, workers: int, seconds: float) -> dict:
    config = LoaderConfig(
        batch_size=FLAGS.batch_size,
        resolution=resolution,
        seed=0,
        num_epochs=None,
        worker_count=workers,
    )
    with EditLoader(records, config, process_index=0, process_count=1) as loader:
        for _ in range(2 * max(1, workers)):
            next(loader)  # worker start-up and first decodes are not throughput
        start, count = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            next(loader)
            count += FLAGS.batch_size
        elapsed = time.perf_counter() - start
    return {
        "benchmark": "data_decode_joint_resize",
        "resolution": resolution,
        "workers": workers,
        "records_per_s": round(count / elapsed, 2),
        "records": count,
        "seconds": round(elapsed, 2),
        "batch_size": FLAGS.batch_size,
        "machine": f"{platform.machine()} {platform.processor() or platform.system()}",
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),  # other jobs on a shared machine
    }


def main(argv: list[str]) -> None:
    del argv
    for resolution in map(int, FLAGS.resolutions):
        records = make_records(resolution, FLAGS.records, FLAGS.seed)
        for workers in map(int, FLAGS.workers):
            print(json.dumps(measure(records, resolution, workers, FLAGS.seconds)), flush=True)


if __name__ == "__main__":
    app.run(main)
