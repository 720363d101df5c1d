r"""CrispEdit parquet -> validated edit records -> ArrayRecord shards, as an Apache Beam pipeline.

The launcher (`convert`) reads every parquet footer (metadata only), plans the shards with
`crispedit.plan_shards` (all rows in (file, row) order, cut into `num_shards` contiguous ranges)
and writes the plan beside the shards. The pipeline then runs in two stages:

1. **Convert**, one unit per segment (the rows of one shard inside one row group): the worker
   reads just that row group, checks every row (`crispedit.row_to_record`, the bad-row reasons
   counted as Beam metrics) and writes the good records to a segment file under `<out>/.beam/`,
   atomically, with its stats beside it. Row groups, not files, are the units: a 1.2 GB file
   with 15 row groups is spread over up to 15 workers.
2. **Write**, one unit per shard (a `GroupByKey` of the small segment stats, not of the image
   bytes): the worker concatenates the shard's segment files in plan order into the shard,
   atomically, writes the stats file beside it (from then on the shard counts as finished) and
   deletes the segment files.

So which row lands in which shard, and in which order, depends only on the input files and
`num_shards`: the same input gives the same shards, byte for byte, on any runner with any number
of workers. A unit that a runner retries rewrites the same bytes. A rerun skips finished shards
(the launcher does not even plan them) and, within unfinished ones, the segments already
converted; a run with nothing left to do starts no pipeline.

Every path is a POSIX path that the launcher and all workers must see (local disk for the
DirectRunner; an NFS/Filestore or gcsfuse mount at the same path on Dataflow, Flink or Spark
workers); see docs/data_at_scale.md.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import shlex
import shutil
import struct
from collections.abc import Iterable, Iterator, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from data_pipelines import crispedit
from data_pipelines.array_record_io import write_shard
from editmgt_jax.atomic import atomic_path

METRICS_NAMESPACE = "crispedit"
WORK_DIR = ".beam"  # under --out; hidden, so list_shards and loaders never see it
PLAN = "plan.json"
_LENGTH = struct.Struct("<Q")


class OptionsError(ValueError):
    """`--beam_options` that Beam does not know or that contradict each other."""


def _without_flag(args: list[str], name: str) -> list[str]:
    """`args` less `name=value` or `name value`."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


LOCAL_RUNNERS = ("DirectRunner", "FnApiRunner", "SwitchingDirectRunner")


def pipeline_options(beam_options: str | None, workers: int | None = None) -> PipelineOptions:
    """Beam options from a command-line string; with none, the local DirectRunner.

    The DirectRunner (also when named) runs on Beam's Python engine, the FnApiRunner: Beam 2.77's
    DirectRunner would first download the Prism runner from GitHub (a network fetch at every
    run, and a Go binary no test here covers); `--runner=PrismRunner` still selects it. Locally,
    `workers` (default: the CPU count) becomes `--direct_num_workers` with
    `--direct_running_mode=multi_processing` unless the string sets them itself. Raises
    `OptionsError` naming options Beam does not know (a typo would otherwise be dropped with a
    log line, e.g. a Dataflow job started without its `--region`).
    """
    args = shlex.split(beam_options or "")
    options = PipelineOptions(args)
    known = options.get_all_options()
    unknown = sorted(set(options.get_all_options(retain_unknown_options=True)) - set(known))
    if unknown:
        raise OptionsError(
            f"--beam_options {beam_options!r}: unknown Beam option(s) {unknown}; see "
            "https://beam.apache.org/documentation/runners/capability-matrix/ and "
            "apache_beam/options/pipeline_options.py for the standard ones"
        )
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    if runner.split(".")[-1] not in LOCAL_RUNNERS:
        if workers is not None:
            raise OptionsError(
                f"--workers={workers} only applies to the local runner, not {runner}; set the "
                "runner's own worker options in --beam_options (Dataflow: --max_num_workers)"
            )
        return options
    direct = options.view_as(DirectOptions)
    user_set = any(a.startswith("--direct_num_workers") for a in args)
    if workers is not None and user_set and direct.direct_num_workers != workers:
        raise OptionsError(
            f"--workers={workers} contradicts --beam_options' "
            f"--direct_num_workers={direct.direct_num_workers}; give only one"
        )
    args = _without_flag(args, "--runner") + ["--runner=FnApiRunner"]
    if not user_set:
        count = workers or os.cpu_count() or 1
        args.append(f"--direct_num_workers={count}")
        if count > 1 and not any(a.startswith("--direct_running_mode") for a in args):
            args.append("--direct_running_mode=multi_processing")
    return PipelineOptions(args)


# ---------------------------------------------------------------------------------------------
# The plan: which segments make which shard, written once by the launcher, read by the workers.


def work_dir(out: str) -> str:
    return os.path.join(out, WORK_DIR)


def write_plan(out: str, jobs: Sequence[tuple[str, Sequence[crispedit.Segment]]]) -> str:
    """Writes the shards still to do and their segments to `<out>/.beam/plan.json`; its path.

    A file, not the pipeline's `Create`: 135k segments would make a job graph too large for
    Dataflow (its limit is 10 MB), while workers read the file once each.
    """
    plan = {
        "shards": [
            {"path": path, "segments": [[s.path, s.row_group, s.first_row, s.start, s.stop]
                                        for s in segments]}
            for path, segments in jobs
        ]
    }  # fmt: skip
    path = os.path.join(work_dir(out), PLAN)
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(plan, f, sort_keys=True)
    return path


@functools.lru_cache(maxsize=4)
def _read_plan(path: str) -> list[tuple[str, list[crispedit.Segment]]]:
    with open(path) as f:
        plan = json.load(f)
    return [
        (shard["path"], [crispedit.Segment(*segment) for segment in shard["segments"]])
        for shard in plan["shards"]
    ]


def segment_file(shard_path: str, order: int) -> str:
    """The segment file of the `order`-th segment of a shard (under `<out>/.beam/`)."""
    folder = os.path.join(os.path.dirname(shard_path), WORK_DIR)
    return os.path.join(folder, f"{os.path.basename(shard_path)}.segment-{order:05d}")


# ---------------------------------------------------------------------------------------------
# Stage 1: a segment -> its good records in a segment file, its stats.


def _write_records(path: str, records: Iterable[bytes]) -> None:
    """Length-prefixed records, atomically: read back in order, one at a time."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for data in records:
            f.write(_LENGTH.pack(len(data)))
            f.write(data)


def _read_records(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while header := f.read(_LENGTH.size):
            (length,) = _LENGTH.unpack(header)
            data = f.read(length)
            if len(data) != length:
                raise OSError(f"{path}: truncated segment file (record of {length} bytes)")
            yield data


def _count(stats: crispedit.ShardStats) -> None:
    """This run's work as Beam metrics (a runner's UI shows them while the job runs)."""
    Metrics.counter(METRICS_NAMESPACE, "rows").inc(stats.rows)
    Metrics.counter(METRICS_NAMESPACE, "written").inc(stats.written)
    for reason, count in stats.skipped.items():
        Metrics.counter(METRICS_NAMESPACE, f"skipped_{reason}").inc(count)


def convert_segment(plan_path: str, shard: int, order: int) -> tuple[int, dict]:
    """Converts segment `order` of shard `shard`; returns (shard, its stats as JSON).

    Reuses the segment file of an interrupted run (its stats file is written last).
    """
    shard_path, segments = _read_plan(plan_path)[shard]
    path = segment_file(shard_path, order)
    if os.path.exists(path + ".json"):
        with open(path + ".json") as f:
            return shard, json.load(f)
    stats = crispedit.ShardStats(path=path)
    _write_records(path, crispedit.convert_rows([segments[order]], stats))
    saved = {**stats.to_json(), "order": order}
    with atomic_path(path + ".json") as tmp, open(tmp, "w") as f:
        json.dump(saved, f, sort_keys=True)
    _count(stats)
    return shard, saved


def segment_units(plan_path: str, shard: int) -> Iterator[tuple[str, int, int]]:
    """(plan, shard, segment order) for every segment of a shard."""
    for order in range(len(_read_plan(plan_path)[shard][1])):
        yield plan_path, shard, order


# ---------------------------------------------------------------------------------------------
# Stage 2: a shard's segment files, in plan order -> the shard and its stats file.


def write_shard_from_segments(plan_path: str, shard: int, parts: Iterable[dict]) -> dict:
    """Writes shard `shard` from its converted segments (atomically), then its stats file.

    Raises when a segment is missing (a runner that lost one must not write a short shard).
    """
    shard_path, segments = _read_plan(plan_path)[shard]
    done = crispedit.load_stats(shard_path)
    if done is not None:  # a retried unit whose first attempt got this far
        return done.to_json()
    parts = sorted(parts, key=lambda part: part["order"])
    orders = [part["order"] for part in parts]
    if orders != list(range(len(segments))):
        raise RuntimeError(
            f"{shard_path}: got segments {orders} of the plan's {len(segments)}; not writing it"
        )
    files = [segment_file(shard_path, order) for order in orders]

    def records() -> Iterator[bytes]:
        for path in files:
            yield from _read_records(path)

    stats = crispedit.ShardStats(path=shard_path)
    for part in parts:
        stats.rows += part["rows"]
        stats.written += part["written"]
        stats.skipped.update(part["skipped"])
        stats.bad_examples.extend(tuple(example) for example in part["bad_examples"])
    del stats.bad_examples[crispedit.MAX_LOGGED_BAD_ROWS :]
    count = write_shard(shard_path, records())
    if count != stats.written:
        raise RuntimeError(
            f"{shard_path}: wrote {count} records, the segments counted {stats.written}"
        )
    crispedit.write_stats(stats)
    Metrics.counter(METRICS_NAMESPACE, "shards_written").inc()
    for path in files:
        for name in (path, path + ".json"):
            if os.path.exists(name):
                os.remove(name)
    return stats.to_json()


def build(pipeline: beam.Pipeline, plan_path: str, num_todo: int) -> beam.PCollection:
    """The conversion of the plan's `num_todo` shards onto `pipeline`; stats JSON per shard."""
    shards = pipeline | "Shards" >> beam.Create(range(num_todo))
    units = (
        shards
        | "Segments" >> beam.FlatMap(lambda shard: segment_units(plan_path, shard))
        # Spreads the segments over the workers (without it a runner may fuse them into the
        # one bundle that produced them).
        | "Spread" >> beam.Reshuffle()
    )
    parts = units | "Convert" >> beam.MapTuple(convert_segment)
    # An empty shard (more shards than rows) has no segments, but is still written.
    keys = shards | "EveryShard" >> beam.Map(lambda shard: (shard, None))
    grouped = (parts, keys) | "Merge" >> beam.Flatten() | "ByShard" >> beam.GroupByKey()
    return grouped | "Write" >> beam.MapTuple(
        lambda shard, parts: write_shard_from_segments(
            plan_path, shard, [p for p in parts if p is not None]
        )
    )


# ---------------------------------------------------------------------------------------------
# The launcher.


def _metrics(result) -> dict[str, int]:
    try:
        counters = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    except (NotImplementedError, AttributeError):  # a runner without metrics
        return {}
    out: collections.Counter = collections.Counter()
    for counter in counters["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        out[counter.key.metric.name] += value or 0
    return dict(sorted(out.items()))


def convert(
    root: str,
    out: str,
    num_shards: int,
    options: PipelineOptions,
    name: str = "crispedit",
    split: str = "train",
    log=None,
) -> dict:
    """Converts the parquet set at `root` into `num_shards` shards in `out`; the summary.

    `log(message)` gets progress and the first bad rows (file, row, reason). Raises
    `crispedit.LayoutError` for inputs that are not the CrispEdit layout, or that differ from
    what `out` already holds.
    """
    log = log or (lambda message: None)
    given_out, out = out, os.path.abspath(out)  # workers may start in another folder
    jobs, unreadable = crispedit.shard_jobs(os.path.abspath(root), out, num_shards, name, split)
    total_rows = sum(s.stop - s.start for _, segments in jobs for s in segments)
    finished = {path: crispedit.load_stats(path) for path, _ in jobs}
    todo = [(path, segments) for path, segments in jobs if finished[path] is None]
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    log(
        f"{total_rows} rows in {len(jobs)} shards; {len(jobs) - len(todo)} finished already, "
        f"{len(todo)} to write ({sum(len(s) for _, s in todo)} segments) on {runner}"
    )
    metrics: dict[str, int] = {}
    if todo:
        plan_path = write_plan(out, todo)
        pipeline = beam.Pipeline(options=options)
        build(pipeline, plan_path, len(todo))
        result = pipeline.run()
        result.wait_until_finish()
        metrics = _metrics(result)
        shutil.rmtree(work_dir(out), ignore_errors=True)
    written, skipped, examples = 0, collections.Counter(), []
    for path, error in unreadable:
        log(f"skipped unreadable parquet file {path}: {error}")
        skipped["unreadable_file"] += 1
    for path, _ in jobs:
        stats = finished[path] or crispedit.load_stats(path)
        if stats is None:
            raise RuntimeError(f"the pipeline finished without writing {path}")
        written += stats.written
        skipped.update(stats.skipped)
        if finished[path] is None:
            examples.extend(stats.bad_examples)
    for path, row, reason, message in examples[: crispedit.MAX_LOGGED_BAD_ROWS]:
        log(f"skipped {path} row {row} ({reason}): {message}")
    return {
        "written": written,
        "skipped": sum(skipped.values()),
        "reasons": dict(sorted(skipped.items())),
        "rows": total_rows,
        "shards": len(jobs),
        "shards_reused": len(jobs) - len(todo),
        "unreadable_files": [path for path, _ in unreadable],
        "out": given_out,
        "runner": runner,
        "beam_metrics": metrics,
    }
