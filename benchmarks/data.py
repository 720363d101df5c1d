r"""Input pipeline throughput: records/s for decode + joint resize/crop, per resolution and workers;
and (`--benchmark=convert`) the CrispEdit parquet -> ArrayRecord conversion on Apache Beam.

  python -m benchmarks.data --resolutions 256,512,1024 --workers 1,2 --seconds 10
  python -m benchmarks.data --benchmark=convert --convert_rows 40 --workers 1,2

Loader: records are photo-like JPEG pairs whose short side is the resolution (every other target
1.25x larger, as in CrispEdit); each is decoded and jointly cropped to resolution x resolution by
the grain loader in `workers` worker processes. Worker start-up is excluded (timing starts after
the first batches). Prints one JSON object per configuration, with the machine's load average.

Convert: `--convert_rows` CrispEdit-like rows (photo-like pairs at `--convert_px` short side:
JPEG sources, every other target a PNG, ~1-3 MB an image) in files of several row groups, through
`launch.prepare_data`'s Beam pipeline (`data_pipelines.beam_convert`) on the local runner with
`workers` worker processes; rows/s and input MB/s, in all and per worker, for the whole run
(worker start-up included, as a job pays it; `startup_s` is an empty pipeline's).

Random access (`--benchmark=random_access`): what a global shuffle costs when the loader reads
CrispEdit's parquet directly, against the converted ArrayRecord shards. The same rows
(`--convert_*` flags) are read one at a time in a random order: from parquet, each row needs its
row group (`read_row_group`, the smallest unit parquet decodes); from the shards, one record
(grain's `ArrayRecordDataSource`). Rows/s and bytes read per row for both; and parquet read a
row group at a time in a random group order, the best a streaming reader can do (a shuffle only
within groups and its buffer).
"""

from __future__ import annotations

import io
import json
import os
import platform
import shutil
import tempfile
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
flags.DEFINE_enum("benchmark", "loader", ["loader", "convert", "random_access"], "What to measure.")
flags.DEFINE_integer("convert_rows", 40, "convert: parquet rows (edit pairs).")
flags.DEFINE_integer("convert_px", 1024, "convert: image short side in pixels.")
flags.DEFINE_integer("convert_files", 2, "convert: parquet files (rows split evenly).")
flags.DEFINE_integer("convert_row_group", 5, "convert: rows per row group.")
flags.DEFINE_integer("convert_shards", 4, "convert: output shards.")


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


def _image(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        Image.fromarray(array).save(buffer, format="JPEG", quality=98)
    else:
        Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def make_crispedit_like(root: str, rows: int, px: int, files: int, row_group: int, seed: int):
    """CrispEdit-layout parquet files of photo-like pairs; returns their total bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    # Distinct content per image from a few base photos (a full `photo()` at 1024 px takes ~1 s):
    # a random crop offset, flip and grain of each.
    bases = [photo(rng, px + 64, px * 5 // 4 + 64) for _ in range(4)]
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema(
        [("input_img", struct), ("output_img", struct), ("instruction", pa.string()),
         ("type", pa.string())]
    )  # fmt: skip
    os.makedirs(os.path.join(root, "data"), exist_ok=True)
    total = 0
    per_file = -(-rows // files)
    for index in range(files):
        table = []
        for row in range(index * per_file, min(rows, (index + 1) * per_file)):
            base = bases[row % len(bases)]
            y, x = rng.integers(0, 64, 2)
            source = base[y : y + px, x : x + px * 5 // 4]
            if row % 3 == 1:
                source = source[:, ::-1]
            noise = rng.normal(0, 3, source.shape)
            source = np.clip(source + noise, 0, 255).astype(np.uint8)
            target = source.copy()
            target[: px // 2, : px // 2] = 255 - target[: px // 2, : px // 2]
            table.append(
                {
                    "input_img": {"bytes": _image(source, "JPEG"), "path": f"{row}_in.jpg"},
                    "output_img": {
                        "bytes": _image(target, "PNG" if row % 2 else "JPEG"),
                        "path": f"{row}_out",
                    },
                    "instruction": "invert the top left corner",
                    "type": "color",
                }
            )
        path = os.path.join(root, "data", f"color_{index:05d}.parquet")
        pq.write_table(pa.Table.from_pylist(table, schema=schema), path, row_group_size=row_group)
        total += os.path.getsize(path)
    return total


def measure_convert(root: str, input_bytes: int, rows: int, workers: int, scratch: str) -> dict:
    """One conversion run of `root` on the local Beam runner with `workers` processes."""
    import apache_beam as beam

    from data_pipelines import beam_convert

    mode = "multi_processing" if workers > 1 else "in_memory"
    options = f"--direct_num_workers={workers} --direct_running_mode={mode}"
    start = time.perf_counter()  # an empty pipeline: the runner's and workers' start-up
    with beam.Pipeline(options=beam_convert.pipeline_options(options)) as pipeline:
        _ = pipeline | beam.Create([0]) | beam.Map(lambda x: x)
    startup = time.perf_counter() - start
    out = os.path.join(scratch, f"out_{workers}")
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    summary = beam_convert.convert(
        root, out, FLAGS.convert_shards, beam_convert.pipeline_options(options)
    )
    elapsed = time.perf_counter() - start
    if summary["written"] != rows:
        raise RuntimeError(f"converted {summary['written']} of {rows} rows: {summary}")
    megabytes = input_bytes / 1e6
    return {
        "benchmark": "crispedit_convert_beam",
        "runner": summary["runner"],
        "workers": workers,
        "rows": rows,
        "input_mb": round(megabytes, 1),
        "mb_per_row": round(megabytes / rows, 2),
        "px": FLAGS.convert_px,
        "seconds": round(elapsed, 2),
        "startup_s": round(startup, 2),
        "rows_per_s": round(rows / elapsed, 2),
        "mb_per_s": round(megabytes / elapsed, 2),
        "rows_per_s_per_worker": round(rows / elapsed / workers, 2),
        "mb_per_s_per_worker": round(megabytes / elapsed / workers, 2),
        "machine": f"{platform.machine()} {platform.processor() or platform.system()}",
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def _timed_reads(reader: str, reads, machine: dict) -> dict:
    """Runs `reads` (an iterator of bytes read per row) and reports rows/s and MB per row."""
    start, rows, nbytes = time.perf_counter(), 0, 0
    for count in reads:
        rows += 1
        nbytes += count
    elapsed = time.perf_counter() - start
    return dict(
        benchmark="random_access",
        reader=reader,
        rows=rows,
        rows_per_s=round(rows / elapsed, 2),
        mb_read_per_row=round(nbytes / rows / 1e6, 2),
        **machine,
    )


def measure_random_access(root: str, shards: str, rows: int) -> list[dict]:
    """Random single-row reads from the parquet files vs the ArrayRecord shards (same rows)."""
    import glob

    import grain
    import pyarrow.parquet as pq

    from data_pipelines.array_record_io import list_shards

    files = sorted(glob.glob(os.path.join(root, "data", "*.parquet")))
    index = []  # (file, row group, row in group, the group's bytes) of every row
    for path in files:
        meta = pq.ParquetFile(path).metadata
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            index += [(path, g, r, group.total_byte_size) for r in range(group.num_rows)]
    rng = lambda: np.random.default_rng(FLAGS.seed)
    machine = dict(
        machine=f"{platform.machine()} {platform.processor() or platform.system()}",
        cpus=os.cpu_count(),
        load_average_1min=round(os.getloadavg()[0], 2),
    )

    def row_per_read():  # a global shuffle: each row needs its whole row group decoded
        for i in rng().permutation(len(index)):
            path, g, r, size = index[i]
            row = pq.ParquetFile(path).read_row_group(g).slice(r, 1).to_pylist()[0]
            assert row["input_img"]["bytes"]
            yield size

    def group_order_only():  # a streaming reader: whole groups, in a random group order
        groups = sorted({(p, g) for p, g, _, _ in index})
        for k in rng().permutation(len(groups)):
            for row in pq.ParquetFile(groups[k][0]).read_row_group(groups[k][1]).to_pylist():
                yield len(row["input_img"]["bytes"]) + len(row["output_img"]["bytes"])

    source = grain.sources.ArrayRecordDataSource(list_shards(shards))
    if len(source) != rows:
        raise RuntimeError(f"{len(source)} records in the shards, {rows} rows in the parquet")

    def record_per_read():
        for i in rng().permutation(len(source)):
            yield len(source[int(i)])

    return [
        _timed_reads("parquet_row_group_per_row", row_per_read(), machine),
        _timed_reads("parquet_row_group_order_only", group_order_only(), machine),
        _timed_reads("array_record_record_per_row", record_per_read(), machine),
    ]


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.benchmark in ("random_access", "convert"):
        scratch = tempfile.mkdtemp(prefix=f"bench_{FLAGS.benchmark}_")
        try:
            root = os.path.join(scratch, "crispedit")
            rows = FLAGS.convert_rows
            args = (rows, FLAGS.convert_px, FLAGS.convert_files, FLAGS.convert_row_group)
            size = make_crispedit_like(root, *args, FLAGS.seed)
            if FLAGS.benchmark == "convert":
                results = [
                    measure_convert(root, size, rows, max(1, workers), scratch)
                    for workers in map(int, FLAGS.workers)
                ]
            else:
                from data_pipelines import beam_convert

                shards = os.path.join(scratch, "shards")
                options = beam_convert.pipeline_options("", workers=1)
                beam_convert.convert(root, shards, FLAGS.convert_shards, options)
                results = measure_random_access(root, shards, rows)
            for result in results:
                print(json.dumps(result), flush=True)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return
    for resolution in map(int, FLAGS.resolutions):
        records = make_records(resolution, FLAGS.records, FLAGS.seed)
        for workers in map(int, FLAGS.workers):
            print(json.dumps(measure(records, resolution, workers, FLAGS.seconds)), flush=True)


if __name__ == "__main__":
    app.run(main)
