"""CrispEdit parquet -> ArrayRecord: every good row kept, every bad row skipped and counted."""

import collections
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_pipelines import crispedit, transforms
from data_pipelines.array_record_io import list_shards, read_all
from data_pipelines.fake_crispedit import GOOD_KINDS, write_fake_crispedit
from data_pipelines.loader import EditLoader, LoaderConfig
from data_pipelines.schema import CATEGORIES, decode_record

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _prepare(*args, check=True):
    result = subprocess.run(
        [sys.executable, "-m", "launch.prepare_data", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("crispedit")
    return write_fake_crispedit(str(root), seed=1, rows_per_file=16, size=40)


def test_conversion_keeps_good_rows_and_counts_bad_ones(fake, tmp_path):
    out = tmp_path / "shards"
    result = _prepare(
        "--from_parquet", fake.root, "--out", str(out), "--num_shards", "4", "--workers", "2"
    )  # fmt: skip  (the deprecated alias still works)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["written"] == len(fake.good)
    assert summary["skipped"] == sum(fake.bad.values())
    assert summary["reasons"] == dict(fake.bad)
    rows = len(fake.good) + sum(fake.bad.values())
    assert f"prepare_data: {rows} rows in 4 shards" in result.stderr  # the progress lines
    assert "skipped" in result.stderr and ".parquet row" in result.stderr  # file and row logged
    shards = list_shards(str(out))
    assert len(shards) == 4
    records = [decode_record(data) for data in read_all(shards)]
    assert sorted(r.id for r in records) == sorted(fake.good)
    assert {r.category for r in records} == set(CATEGORIES)
    # Odd-but-valid rows (gray, RGBA, 16-bit, CMYK, sizes, EXIF) all decode to RGB uint8.
    for record in records:
        for data in (record.source, record.target):
            image = transforms.decode_image(data)
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3

    again = _prepare("--from_parquet", fake.root, "--out", str(out), "--num_shards", "4")
    rerun = json.loads(again.stdout.strip().splitlines()[-1])
    assert rerun["shards_reused"] == 4 and rerun["written"] == summary["written"]
    assert rerun["reasons"] == summary["reasons"]


def test_each_good_kind_survives(fake):
    kinds = collections.Counter()
    for path in fake.files:
        table = pq.read_table(path).to_pylist()
        for index, row in enumerate(table):
            stem = os.path.splitext(os.path.basename(path))[0]
            if f"{stem}:{index}" in fake.good:
                record = crispedit.row_to_record(row, path, index)
                kinds[fake.kinds[record.id]] += 1
                assert record.instruction
    assert set(kinds) == set(GOOD_KINDS)


def test_sizes_differ_and_exif_rotates(fake):
    path = fake.files[0]
    rows = pq.read_table(path).to_pylist()
    sizes = rows[GOOD_KINDS.index("sizes")]
    source = transforms.decode_image(sizes["input_img"]["bytes"])
    target = transforms.decode_image(sizes["output_img"]["bytes"])
    assert source.shape != target.shape
    exif = rows[GOOD_KINDS.index("exif")]
    upright = transforms.decode_image(exif["input_img"]["bytes"])
    assert upright.shape[0] > upright.shape[1]  # stored landscape, displayed portrait


def test_streaming_reader_matches_the_plan(fake):
    results = list(crispedit.iter_records(fake.root))
    good = [r.id for r in results if not isinstance(r, crispedit.BadRow)]
    bad = collections.Counter(r.reason for r in results if isinstance(r, crispedit.BadRow))
    assert sorted(good) == sorted(fake.good) and bad == fake.bad


def test_plan_covers_every_row_once(fake):
    plan = crispedit.plan_shards(fake.files, 5)
    seen = [
        (s.path, s.first_row + i) for segs in plan for s in segs for i in range(s.start, s.stop)
    ]
    total = sum(pq.ParquetFile(p).metadata.num_rows for p in fake.files)
    assert len(seen) == len(set(seen)) == total


def test_empty_folder_and_unknown_layout_are_clear_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _prepare("--from_parquet", str(empty), "--out", str(tmp_path / "o1"),
                      "--num_shards", "1", check=False)  # fmt: skip
    assert result.returncode == 2 and "no *.parquet files" in result.stderr

    odd = tmp_path / "odd" / "data"
    odd.mkdir(parents=True)
    pq.write_table(pa.table({"image": [b"x"], "caption": ["y"]}), odd / "add_00000.parquet")
    result = _prepare("--from_parquet", str(odd.parent), "--out", str(tmp_path / "o2"),
                      "--num_shards", "1", check=False)  # fmt: skip
    assert result.returncode == 2 and "unknown column layout" in result.stderr
    assert "input_img" in result.stderr and not (tmp_path / "o2").exists()


def test_category_names_are_normalized():
    assert crispedit.normalize_category("Background_Change") == "background change"
    assert crispedit.normalize_category("motion-change") == "motion change"
    assert crispedit.normalize_category("colour") == "color"
    assert crispedit.normalize_category("Object Removal") == "remove"
    assert crispedit.normalize_category("color alteration") == "color"
    assert crispedit.normalize_category("background color change") == "background change"
    assert crispedit.normalize_category("sharpen") is None
    assert crispedit.category_from_filename("data/motion_change_00012.parquet") == "motion change"


def test_parquet_streaming_loader_splits_files_and_resumes(fake):
    config = LoaderConfig(batch_size=4, resolution=32, seed=3, drop_remainder=False)
    ids = [
        [str(i) for batch in EditLoader(fake.root, config, None, (), p, 2, parquet=True)
         for i in batch["id"]]
        for p in range(2)
    ]  # fmt: skip
    assert not set(ids[0]) & set(ids[1])
    assert sorted(ids[0] + ids[1]) == sorted(fake.good)

    forever = LoaderConfig(batch_size=4, resolution=32, seed=3, num_epochs=None)
    first = EditLoader(fake.root, forever, process_index=0, process_count=1, parquet=True)
    for _ in range(5):
        next(first)
    state = json.loads(json.dumps(first.get_state()))
    expected = [next(first) for _ in range(4)]
    restored = EditLoader(fake.root, forever, process_index=0, process_count=1, parquet=True)
    restored.set_state(state)
    for want in expected:
        have = next(restored)
        for key in want:
            np.testing.assert_array_equal(want[key], have[key])


def test_a_corrupt_file_is_skipped_and_reported(tmp_path):
    fake = write_fake_crispedit(str(tmp_path / "set"), seed=2, categories=("color",), size=32)
    with open(tmp_path / "set" / "data" / "color_00001.parquet", "wb") as f:
        f.write(b"PAR1 this is not a parquet footer")
    result = _prepare("--from_parquet", fake.root, "--out", str(tmp_path / "out"),
                      "--num_shards", "2", "--beam_options=--direct_num_workers=1")  # fmt: skip
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["written"] == len(fake.good)
    assert summary["reasons"] == {**dict(fake.bad), "unreadable_file": 1}
    assert summary["unreadable_files"][0].endswith("color_00001.parquet")
    assert "color_00001.parquet" in result.stderr
