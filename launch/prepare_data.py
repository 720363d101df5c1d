r"""Converts a CrispEdit-layout parquet set into ArrayRecord shards of edit records (Apache Beam).

  python -m launch.prepare_data --from_parquet /data/CrispEdit-2M --out /data/crispedit_ar \
      --num_shards 1024
  # the same pipeline on 2 local worker processes, or on Dataflow (docs/data_at_scale.md):
  python -m launch.prepare_data ... --beam_options="--direct_num_workers=2 \
      --direct_running_mode=multi_processing"
  python -m launch.prepare_data ... --beam_options="--runner=DataflowRunner --project=P \
      --region=us-central1 --temp_location=gs://B/tmp \
      --requirements_file=data_pipelines/beam_requirements.txt"

One pipeline (`data_pipelines.beam_convert`) on any Beam runner; without `--beam_options` it runs
locally on the DirectRunner with one worker process per CPU. Bad rows are skipped and counted by
reason (Beam metrics, and the first few logged with file and row); a parquet file whose footer
cannot be read is skipped as a whole (reason "unreadable_file"). Each shard is written
atomically with a stats file beside it; the same input gives the same shards, byte for byte,
whatever the runner or worker count; a rerun skips finished shards. Prints one final JSON line:
{"written": N, "skipped": N, "reasons": {reason: count}, ...}.
"""

from __future__ import annotations

import json
import logging as std_logging
import sys
import traceback

from absl import flags, logging

from data_pipelines import crispedit
from launch import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("from_parquet", None, "Folder with the CrispEdit layout (data/*.parquet).")
flags.DEFINE_string("out", None, "Output folder for the ArrayRecord shards.")
flags.DEFINE_integer("num_shards", None, "Number of output shards.", lower_bound=1)
flags.DEFINE_string(
    "beam_options",
    None,
    "Apache Beam pipeline options, one string, e.g. '--runner=DataflowRunner --project=P "
    "--region=R --temp_location=gs://B/tmp'. Default: the local DirectRunner, one worker "
    "process per CPU.",
)
flags.DEFINE_integer(
    "workers",
    None,
    "Deprecated: local worker processes; the same as --beam_options="
    "'--direct_num_workers=N --direct_running_mode=multi_processing'.",
    lower_bound=1,
)
flags.DEFINE_string("name", "crispedit", "Dataset name in shard file names.")
flags.DEFINE_string("split", "train", "Split name in shard file names.")
flags.mark_flags_as_required(["from_parquet", "out", "num_shards"])


def _log(message: str) -> None:
    print(f"prepare_data: {message}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> None:
    del argv
    try:
        from data_pipelines import beam_convert
    except ImportError as err:
        print(
            f"prepare_data: needs Apache Beam ({err}): pip install -r requirements-beam.txt "
            '(or pip install "editmgt-jax[beam]")',
            file=sys.stderr,
        )
        sys.exit(2)
    if not FLAGS["verbosity"].present:
        # Beam logs every stage start at INFO; the progress lines here say what matters.
        std_logging.getLogger("apache_beam").setLevel(std_logging.WARNING)
    if FLAGS.workers is not None:
        logging.warning("--workers is deprecated; use --beam_options='--direct_num_workers=N'")
    try:
        options = beam_convert.pipeline_options(FLAGS.beam_options, FLAGS.workers)
        summary = beam_convert.convert(
            FLAGS.from_parquet,
            FLAGS.out,
            FLAGS.num_shards,
            options,
            name=FLAGS.name,
            split=FLAGS.split,
            log=_log,
        )
    except (crispedit.LayoutError, beam_convert.OptionsError) as err:
        print(f"prepare_data: {err}", file=sys.stderr)
        sys.exit(2)
    except Exception as err:  # a worker's error, of whatever type the runner reports it as
        # Full disk and the like: a shard being written was removed by its atomic write, and
        # the finished shards and converted segments stay for the rerun.
        traceback.print_exc()
        last = str(err).strip().splitlines()[-1:] or [type(err).__name__]
        print(f"prepare_data: the pipeline failed: {last[0]}; rerun to resume", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(summary))


def run():
    """The console script (pyproject.toml): the same absl main as `python -m`."""
    cli.run_main(main)


if __name__ == "__main__":
    run()
