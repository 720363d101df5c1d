r"""Writes the synthetic edit world to ArrayRecord shards (or PNG files for inspection).

  python -m launch.make_synthetic --num 7000 --size 64 --seed 0 --out /tmp/synth
  python -m launch.make_synthetic --num 70 --split heldout --format png --out /tmp/synth_png

With `--format png`, the folder also gets `jobs.jsonl` (per example: id, instruction, category and
the source / target / mask file names: the ground truth) and `edit_jobs.jsonl` (image,
instruction, out: what `launch.edit --jobs` reads; no mask, so an edit is not told where to act).

Prints one final JSON line: {"written": N, "categories": {category: count}, ...}.
The same flags give the same bytes, whatever `--workers`.
"""

from __future__ import annotations

import collections
import json
import math
import multiprocessing
import os

from absl import flags

from data_pipelines.array_record_io import shard_name, write_shard
from data_pipelines.schema import CATEGORIES, encode_record
from data_pipelines.synthetic.generate import (
    DEFAULT_SIZE,
    make_example,
    png_bytes,
    to_record,
)
from data_pipelines.synthetic.phrasings import SPLITS
from editmgt_jax.atomic import atomic_path
from launch import cli

FLAGS = flags.FLAGS
flags.DEFINE_integer("num", None, "Number of examples.", lower_bound=1)
flags.DEFINE_integer("size", DEFAULT_SIZE, "Image side in pixels (>= 32).", lower_bound=32)
flags.DEFINE_integer("seed", 0, "World seed; example i uses (seed, split, i).")
flags.DEFINE_string("out", None, "Output folder.")
flags.DEFINE_enum("split", "train", list(SPLITS), "Phrasings and scenes: train or heldout.")
flags.DEFINE_enum("format", "array_record", ["array_record", "png"], "Output format.")
flags.DEFINE_integer("records_per_shard", 4096, "ArrayRecord shard size.", lower_bound=1)
flags.DEFINE_integer("workers", 1, "Generator processes.", lower_bound=1)
flags.DEFINE_string("name", "synthetic", "Dataset name in shard file names.")
flags.mark_flags_as_required(["num", "out"])


def _write_array_record_shard(job: tuple[str, int, int, int, int, str]) -> collections.Counter:
    """Writes examples [start, stop) to one shard; returns the count per category written."""
    path, start, stop, seed, size, split = job
    counts: collections.Counter = collections.Counter()

    def records():
        for i in range(start, stop):
            example = make_example(seed, i, size, split)
            counts[example.category] += 1
            yield encode_record(to_record(example))

    write_shard(path, records())
    return counts


def edited_name(index: int) -> str:
    """The file name `edit_jobs.jsonl` gives the edit of example `index`."""
    return f"{index:05d}_edited.png"


def _write_png_example(job: tuple[str, int, int, int, str]) -> dict[str, str]:
    out, index, seed, size, split = job
    example = make_example(seed, index, size, split)
    row = {"id": example.id, "instruction": example.instruction, "category": example.category}
    for key in ("source", "target", "mask"):
        name = f"{index:05d}_{key}.png"
        with atomic_path(os.path.join(out, name)) as tmp, open(tmp, "wb") as f:
            f.write(png_bytes(getattr(example, key)))
        row[key] = name
    return row


def main(argv: list[str]) -> None:
    del argv
    num, out = FLAGS.num, FLAGS.out
    os.makedirs(out, exist_ok=True)
    ctx = multiprocessing.get_context("spawn")
    pool = ctx.Pool(FLAGS.workers) if FLAGS.workers > 1 else None
    mapper = pool.imap if pool is not None else map
    try:
        if FLAGS.format == "array_record":
            num_shards = math.ceil(num / FLAGS.records_per_shard)
            jobs = []
            for shard in range(num_shards):
                start = shard * FLAGS.records_per_shard
                stop = min(num, start + FLAGS.records_per_shard)
                path = os.path.join(out, shard_name(FLAGS.name, FLAGS.split, shard, num_shards))
                jobs.append((path, start, stop, FLAGS.seed, FLAGS.size, FLAGS.split))
            counts = sum(mapper(_write_array_record_shard, jobs), collections.Counter())
            files = num_shards
        else:
            jobs = [(out, i, FLAGS.seed, FLAGS.size, FLAGS.split) for i in range(num)]
            rows = list(mapper(_write_png_example, jobs))
            edit_rows = [
                dict(image=row["source"], instruction=row["instruction"], out=edited_name(i))
                for i, row in enumerate(rows)
            ]
            for name, table in (("jobs.jsonl", rows), ("edit_jobs.jsonl", edit_rows)):
                with atomic_path(os.path.join(out, name)) as tmp, open(tmp, "w") as f:
                    for row in table:
                        f.write(json.dumps(row, sort_keys=True) + "\n")
            counts = collections.Counter(row["category"] for row in rows)
            files = 3 * len(rows) + 2
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    categories = {c: counts.get(c, 0) for c in CATEGORIES}
    summary = {
        "written": sum(counts.values()),
        "categories": categories,
        "split": FLAGS.split,
        "size": FLAGS.size,
        "seed": FLAGS.seed,
        "format": FLAGS.format,
        "files": files,
        "out": out,
    }
    print(json.dumps(summary))


def run():
    """The console script (pyproject.toml): the same absl main as `python -m`."""
    cli.run_main(main)


if __name__ == "__main__":
    run()
