"""launch.prepare_data on Apache Beam (data_pipelines/beam_convert.py), on the local runner.

A miniature CrispEdit layout with planted faults (bad rows of every kind, an unknown category,
an unreadable file): the kept rows and the skipped ones by reason are the planted ones, in the
JSON line and in the Beam metrics; the shards are the same bytes with 1 and 2 workers; a rerun
rewrites nothing; a run that stopped part way resumes to the same bytes.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_pipelines import beam_convert, crispedit
from data_pipelines.array_record_io import list_shards, read_all
from data_pipelines.fake_crispedit import write_fake_crispedit
from data_pipelines.schema import decode_record

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_SHARDS = 4
TWO_WORKERS = "--direct_num_workers=2 --direct_running_mode=multi_processing"


class Planted:
    """The fake set and what must come out of it."""

    def __init__(self, root: str):
        self.fake = write_fake_crispedit(
            root, seed=3, rows_per_file=15, size=32, categories=("add", "color", "style")
        )
        data = os.path.join(root, "data")
        # A file whose footer is garbage: skipped whole, reported as unreadable_file.
        with open(os.path.join(data, "color_00001.parquet"), "wb") as f:
            f.write(b"PAR1" + b"\x00garbage" * 20)
        # Two good rows of a category no name or keyword maps to (`type` "sharpen", a file name
        # without a category): unknown_category.
        rows = pq.read_table(self.fake.files[0]).slice(0, 2).to_pylist()
        for row in rows:
            row["type"] = "sharpen"
        table = pa.Table.from_pylist(rows, schema=pq.read_schema(self.fake.files[0]))
        pq.write_table(table, os.path.join(data, "zz_misc_00000.parquet"), row_group_size=1)
        self.good = sorted(self.fake.good)
        self.reasons = {**dict(self.fake.bad), "unknown_category": 2, "unreadable_file": 1}


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Planted:
    return Planted(str(tmp_path_factory.mktemp("crispedit")))


def prepare(*args: str) -> tuple[dict, str]:
    env = dict(os.environ, PYTHONPATH=REPO)  # the Beam worker processes import data_pipelines
    result = subprocess.run(
        [sys.executable, "-m", "launch.prepare_data", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def convert_here(planted: Planted, out, beam_options: str = "--direct_num_workers=1") -> dict:
    """The same pipeline in this process (one in-memory worker: no worker start-up)."""
    options = beam_convert.pipeline_options(beam_options)
    return beam_convert.convert(planted.fake.root, str(out), NUM_SHARDS, options)


def digests(folder) -> dict[str, str]:
    """name -> sha256 of every file in `folder` (shards, stats files, manifest)."""
    return {
        name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
        for name in sorted(os.listdir(folder))
    }


def mtimes(folder) -> dict[str, int]:
    return {name: (folder / name).stat().st_mtime_ns for name in sorted(os.listdir(folder))}


@pytest.fixture(scope="module")
def two_workers(planted, tmp_path_factory):
    """(summary, stderr, out) of a run with 2 local worker processes."""
    out = tmp_path_factory.mktemp("two") / "shards"
    summary, stderr = prepare("--from_parquet", planted.fake.root, "--out", str(out),
                              "--num_shards", str(NUM_SHARDS), f"--beam_options={TWO_WORKERS}")  # fmt: skip
    return summary, stderr, out


def test_two_workers_keep_the_good_rows_and_count_the_planted_faults(planted, two_workers):
    summary, stderr, out = two_workers
    assert summary["written"] == len(planted.good)
    assert summary["reasons"] == planted.reasons
    assert summary["skipped"] == sum(planted.reasons.values())
    assert summary["shards"] == NUM_SHARDS and summary["shards_reused"] == 0
    assert summary["runner"] == "FnApiRunner"
    assert [os.path.basename(p) for p in summary["unreadable_files"]] == ["color_00001.parquet"]
    # Beam metrics count the same (all but unreadable_file: the launcher reads the footers).
    metrics = summary["beam_metrics"]
    assert metrics["written"] == len(planted.good) and metrics["shards_written"] == NUM_SHARDS
    per_row = {k: v for k, v in planted.reasons.items() if k != "unreadable_file"}
    assert {
        k.removeprefix("skipped_"): v for k, v in metrics.items() if k.startswith("skipped_")
    } == per_row
    assert metrics["rows"] == summary["rows"] == len(planted.good) + sum(per_row.values())
    assert "skipped" in stderr and ".parquet row" in stderr  # file and row of a bad row

    # Every good row exactly once, in (file, row) order across the shards.
    files = sorted(os.path.basename(p) for p in crispedit.find_parquet_files(planted.fake.root))
    order = {os.path.splitext(name)[0]: i for i, name in enumerate(files)}
    ids = [decode_record(data).id for data in read_all(list_shards(str(out)))]
    assert sorted(ids) == planted.good
    keys = [(order[i.split(":")[0]], int(i.split(":")[1])) for i in ids]
    assert keys == sorted(keys)
    # Nothing left behind but shards, stats and the manifest.
    assert sorted(os.listdir(out)) == sorted(
        [crispedit.MANIFEST]
        + [
            n
            for p in list_shards(str(out))
            for n in (os.path.basename(p), os.path.basename(p) + ".stats.json")
        ]
    )


def test_one_worker_writes_the_same_bytes_and_a_rerun_rewrites_nothing(
    planted, two_workers, tmp_path
):
    summary, _, out = two_workers
    one = tmp_path / "one"
    alone = convert_here(planted, one)
    assert digests(one) == digests(out)  # shards, stats files and manifest
    assert {k: v for k, v in alone.items() if k != "out"} == {
        k: v for k, v in summary.items() if k != "out"
    }

    before = mtimes(one)
    again = convert_here(planted, one)
    assert mtimes(one) == before
    assert again["shards_reused"] == NUM_SHARDS and again["beam_metrics"] == {}
    assert (again["written"], again["reasons"]) == (summary["written"], summary["reasons"])


def test_a_stopped_run_resumes_to_the_same_bytes(planted, two_workers, tmp_path):
    _, _, out = two_workers
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    shards = list_shards(str(resumed))
    # Stopped while writing shard 1: its shard and stats are gone, one of its segments was
    # converted already (and is reused), and a temporary file of the atomic write is left.
    lost = shards[1]
    os.remove(lost)
    os.remove(crispedit.stats_path(lost))
    jobs, _ = crispedit.shard_jobs(planted.fake.root, str(resumed), NUM_SHARDS)
    plan = beam_convert.write_plan(str(resumed), [jobs[1]])
    beam_convert.convert_segment(plan, 0, 0)
    (resumed / f".{os.path.basename(lost)}.0123456789ab.tmp").write_bytes(b"half a shard")
    kept = {
        n: t for n, t in mtimes(resumed).items() if not n.startswith((os.path.basename(lost), "."))
    }

    summary = convert_here(planted, resumed)
    assert summary["shards_reused"] == NUM_SHARDS - 1
    assert summary["written"] == len(planted.good)
    # Only the lost shard's other segments were converted again.
    first = jobs[1][1][0]
    lost_rows = sum(s.stop - s.start for s in jobs[1][1])
    assert summary["beam_metrics"]["rows"] == lost_rows - (first.stop - first.start)
    os.remove(resumed / f".{os.path.basename(lost)}.0123456789ab.tmp")
    assert digests(resumed) == digests(out)
    assert {n: t for n, t in mtimes(resumed).items() if n in kept} == kept
    assert not (resumed / beam_convert.WORK_DIR).exists()


def test_full_disk_leaves_no_shard_behind_and_the_rerun_finishes(planted, tmp_path, monkeypatch):
    from data_pipelines import array_record_io

    real = array_record_io.array_record_module.ArrayRecordWriter

    class FullDisk:
        def __init__(self, path, options):
            self.count = 0

        def write(self, data):
            self.count += 1
            if self.count > 2:
                raise OSError(28, "No space left on device")

        def close(self):
            pass

    out = tmp_path / "full"
    monkeypatch.setattr(array_record_io.array_record_module, "ArrayRecordWriter", FullDisk)
    with pytest.raises(Exception, match="No space left"):
        convert_here(planted, out)
    names = os.listdir(out)
    assert not [n for n in names if ".array_record" in n]  # no shard, no temporary, no stats
    monkeypatch.setattr(array_record_io.array_record_module, "ArrayRecordWriter", real)
    summary = convert_here(planted, out)
    assert summary["written"] == len(planted.good) and summary["shards_reused"] == 0


def test_more_shards_than_rows_writes_empty_shards(tmp_path):
    fake = write_fake_crispedit(
        str(tmp_path / "set"), rows_per_file=1, size=32, categories=("add",), with_faults=False
    )
    options = beam_convert.pipeline_options("--direct_num_workers=1")
    summary = beam_convert.convert(fake.root, str(tmp_path / "out"), 3, options)
    assert summary["written"] == 1 and summary["shards"] == 3
    assert [len(read_all([p])) for p in list_shards(str(tmp_path / "out"))] == [0, 0, 1]


def test_beam_options_are_checked_and_default_to_the_local_runner():
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    options = beam_convert.pipeline_options(None, workers=3)
    assert options.view_as(StandardOptions).runner == "FnApiRunner"  # not Prism (a download)
    direct = options.view_as(DirectOptions)
    assert (direct.direct_num_workers, direct.direct_running_mode) == (3, "multi_processing")
    named = beam_convert.pipeline_options("--runner DirectRunner --direct_num_workers=2")
    assert named.view_as(StandardOptions).runner == "FnApiRunner"
    assert named.view_as(DirectOptions).direct_num_workers == 2
    flink = beam_convert.pipeline_options("--runner=FlinkRunner --flink_master=host:8081")
    assert flink.view_as(StandardOptions).runner == "FlinkRunner"
    with pytest.raises(beam_convert.OptionsError, match="direct_num_worker"):
        beam_convert.pipeline_options("--direct_num_worker=2")  # a typo: not silently dropped
    with pytest.raises(beam_convert.OptionsError, match="--workers=2 contradicts"):
        beam_convert.pipeline_options("--direct_num_workers=3", workers=2)
    with pytest.raises(beam_convert.OptionsError, match="only applies to the local runner"):
        beam_convert.pipeline_options("--runner=DataflowRunner", workers=2)


def _pins(name: str) -> dict[str, str]:
    with open(os.path.join(REPO, name), encoding="utf-8") as f:
        lines = [line.split("#")[0].strip() for line in f]
    return dict(line.split("==") for line in lines if line and not line.startswith("-"))


def test_the_beam_pin_sits_in_the_extra_and_beam_accepts_the_main_pins():
    """requirements-beam.txt's pin is inside pyproject's `beam` extra, and the pins of
    requirements.txt are inside what the installed apache-beam declares (pip would otherwise
    up- or downgrade them when CI adds Beam)."""
    import importlib.metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        extra = tomllib.load(f)["project"]["optional-dependencies"]["beam"]
    (declared,) = [Requirement(r) for r in extra]
    assert declared.specifier.contains(_pins("requirements-beam.txt")["apache-beam"])
    assert (
        importlib.metadata.version("apache-beam") == _pins("requirements-beam.txt")["apache-beam"]
    )
    main = {canonicalize_name(k): v for k, v in _pins("requirements.txt").items()}
    checked = collections.Counter()
    for line in importlib.metadata.requires("apache-beam"):
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name in main:
            checked[name] += 1
            assert req.specifier.contains(main[name]), (name, str(req.specifier), main[name])
    assert {"pyarrow", "numpy", "pillow"} <= set(checked)
