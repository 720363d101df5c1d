r"""Converts a CrispEdit-layout parquet set into ArrayRecord shards of edit records.

  python -m launch.prepare_data --from_parquet /data/CrispEdit-2M --out /data/crispedit_ar \
      --num_shards 1024 --workers 16

Bad rows are skipped and counted by reason (the first few are logged with file and row); a parquet
file whose footer cannot be read is skipped as a whole (reason "unreadable_file"). Each shard
is written atomically with a stats file beside it; a rerun skips finished shards. Prints one final
JSON line: {"written": N, "skipped": N, "reasons": {reason: count}, ...}.
"""

from __future__ import annotations

import collections
import json
import multiprocessing
import sys

from absl import flags, logging
from tqdm import tqdm

from data_pipelines import crispedit
from launch import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("from_parquet", None, "Folder with the CrispEdit layout (data/*.parquet).")
flags.DEFINE_string("out", None, "Output folder for the ArrayRecord shards.")
flags.DEFINE_integer("num_shards", None, "Number of output shards.", lower_bound=1)
flags.DEFINE_integer("workers", None, "Converter processes (default: CPU count).", lower_bound=1)
flags.DEFINE_string("name", "crispedit", "Dataset name in shard file names.")
flags.DEFINE_string("split", "train", "Split name in shard file names.")
flags.mark_flags_as_required(["from_parquet", "out", "num_shards"])


def _convert(job: tuple[str, list[crispedit.Segment]]) -> crispedit.ShardStats:
    return crispedit.convert_shard(*job)


def main(argv: list[str]) -> None:
    del argv
    try:
        jobs, unreadable = crispedit.shard_jobs(
            FLAGS.from_parquet, FLAGS.out, FLAGS.num_shards, FLAGS.name, FLAGS.split
        )
    except crispedit.LayoutError as err:
        print(f"prepare_data: {err}", file=sys.stderr)
        sys.exit(2)
    total_rows = sum(s.stop - s.start for _, segments in jobs for s in segments)
    workers = min(FLAGS.workers or multiprocessing.cpu_count(), len(jobs))
    written, skipped, reused, logged = 0, collections.Counter(), 0, 0
    for path, error in unreadable:
        logging.warning("skipped unreadable parquet file %s: %s", path, error)
        skipped["unreadable_file"] += 1
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    results = pool.imap_unordered(_convert, jobs) if pool is not None else map(_convert, jobs)
    try:
        with tqdm(total=total_rows, unit="row", desc="prepare_data", file=sys.stderr) as bar:
            for stats in results:
                written += stats.written
                skipped.update(stats.skipped)
                reused += stats.reused
                for path, row, reason, message in stats.bad_examples:
                    if logged < crispedit.MAX_LOGGED_BAD_ROWS:
                        logging.warning("skipped %s row %d (%s): %s", path, row, reason, message)
                        logged += 1
                bar.update(stats.rows)
    except OSError as err:
        # Full disk and the like: the shard being written was removed by its atomic write.
        print(f"prepare_data: writing shards failed: {err}; rerun to resume", file=sys.stderr)
        sys.exit(1)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    summary = {
        "written": written,
        "skipped": sum(skipped.values()),
        "reasons": dict(sorted(skipped.items())),
        "rows": total_rows,
        "shards": len(jobs),
        "shards_reused": reused,
        "unreadable_files": [path for path, _ in unreadable],
        "out": FLAGS.out,
    }
    print(json.dumps(summary))


def run():
    """The console script (pyproject.toml): the same absl main as `python -m`."""
    cli.run_main(main)


if __name__ == "__main__":
    run()
