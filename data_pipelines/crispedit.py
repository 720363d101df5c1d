"""CrispEdit-2M as released (parquet) -> edit records -> ArrayRecord shards.

Layout: `<root>/data/<category>_NNNNN.parquet` (any `*.parquet` below `root` is taken), columns
`input_img` {bytes, path}, `output_img` {bytes, path}, `instruction` (str), `type` (str, optional:
the file name's category is used when absent).

Rows are checked one by one (`row_to_record`): a bad row raises `BadRow` with a reason key, the
converter counts it and moves on. A unit of work reads one row group (`iter_segment_rows`), so
memory holds one row group at a time. `plan_shards` splits all rows, in file order, into shards
of global row ranges; `data_pipelines.beam_convert` converts those segments in parallel (Apache
Beam) and writes each shard atomically, and a rerun skips the shards already finished.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import io
import json
import os
import re
from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from data_pipelines import transforms
from data_pipelines.array_record_io import shard_name
from data_pipelines.schema import CATEGORIES, EditRecord, encode_record
from editmgt_jax.atomic import atomic_path

IMAGE_COLUMNS = ("input_img", "output_img")
REQUIRED_COLUMNS = (*IMAGE_COLUMNS, "instruction")
# A single encoded image above this is not a photo of an edit set (CrispEdit: ~1-3 MB).
MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_LOGGED_BAD_ROWS = 10
VALIDATION_MIN_SIDE = 64
MANIFEST = "conversion.json"
_CATEGORY_ALIASES = {
    "background": "background change",
    "bg change": "background change",
    "motion": "motion change",
    "move": "motion change",
    "colour": "color",
    "color change": "color",
    "addition": "add",
    "removal": "remove",
    "replacement": "replace",
    "style change": "style",
    "style transfer": "style",
}


# Checked in order: "background" before "color" ("background color change" is a background edit).
_CATEGORY_KEYWORDS = (
    (r"\bbackground|\bbg\b", "background change"),
    (r"\bstyl", "style"),
    (r"\bmotion|\bmov|\bpose\b|\baction\b", "motion change"),
    (r"\bcolou?r", "color"),
    (r"\bremov|\bdelet|\beras", "remove"),
    (r"\breplac|\bswap|\bsubstitut", "replace"),
    (r"\badd|\binsert", "add"),
)


class LayoutError(ValueError):
    """A folder that is not in the CrispEdit layout (no parquet files, unknown columns)."""


class BadRow(ValueError):
    """A row that cannot become a record; `reason` is a short key for counting."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def find_parquet_files(root: str) -> list[str]:
    """All `*.parquet` files below `root`, sorted; raises `LayoutError` when there are none."""
    if not os.path.isdir(root):
        raise LayoutError(f"--from_parquet {root!r} is not a folder")
    paths = sorted(glob.glob(os.path.join(root, "**", "*.parquet"), recursive=True))
    if not paths:
        raise LayoutError(
            f"no *.parquet files under {root!r}; expected the CrispEdit layout "
            "<root>/data/<category>_NNNNN.parquet"
        )
    return paths


def check_layout(path: str) -> pa.Schema:
    """Reads a file's schema; raises `LayoutError` naming what is missing or of the wrong type."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as err:
        raise LayoutError(f"{path}: not a readable parquet file ({err})") from err
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise LayoutError(
            f"{path}: unknown column layout {schema.names}; missing {missing}, expected "
            f"{list(REQUIRED_COLUMNS)} (+ optional 'type')"
        )
    for column in IMAGE_COLUMNS:
        kind = schema.field(column).type
        is_struct = pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0
        if not (is_struct or pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
            raise LayoutError(
                f"{path}: column {column!r} has type {kind}; expected struct<bytes, path> or binary"
            )
    return schema


def normalize_category(value: object) -> str | None:
    """'Background_Change', 'background-change', 'colour', 'object removal' ... -> a `CATEGORIES`
    name, or None."""
    if not isinstance(value, str):
        return None
    text = re.sub(r"[\s_\-]+", " ", value).strip().lower()
    text = _CATEGORY_ALIASES.get(text, text)
    if text in CATEGORIES:
        return text
    for pattern, category in _CATEGORY_KEYWORDS:  # "object removal", "color alteration", ...
        if re.search(pattern, text):
            return category
    return None


def category_from_filename(path: str) -> str | None:
    """`data/background_change_00012.parquet` -> 'background change'."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return normalize_category(re.sub(r"[_\-]?\d+$", "", stem))


def _image_bytes(cell: object, column: str, folder: str) -> bytes:
    if isinstance(cell, dict):
        data, path = cell.get("bytes"), cell.get("path")
    else:
        data, path = cell, None
    if data is None and isinstance(path, str) and path:
        # Some exports keep the bytes beside the parquet file and only a path in the row.
        local = path if os.path.isabs(path) else os.path.join(folder, path)
        if os.path.isfile(local):
            with open(local, "rb") as f:
                data = f.read()
    if data is None:
        raise BadRow("missing_image", f"{column} has no image bytes")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BadRow("missing_image", f"{column} holds {type(data).__name__}, not bytes")
    data = bytes(data)
    if not data:
        raise BadRow("empty_bytes", f"{column} bytes are empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise BadRow("absurd_size", f"{column} is {len(data)} bytes (> {MAX_IMAGE_BYTES})")
    try:
        # Decode every byte (truncated files fail here, not in training); JPEGs at reduced DCT
        # scale, which still reads the whole stream but is faster.
        transforms.open_image(data, min_side=VALIDATION_MIN_SIDE)
    except transforms.DecodeError as err:
        raise BadRow(err.reason, f"{column}: {err}") from err
    return data


def _store_bytes(data: bytes) -> bytes:
    """The schema keeps PNG/JPEG; other formats (WebP, BMP, ...) are re-encoded losslessly."""
    if data.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8")):
        return data
    image = transforms.open_image(data)
    if image.mode not in ("RGB", "RGBA", "L", "LA", "I;16", "P"):
        image = image.convert("RGBA" if "A" in image.mode else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def row_to_record(row: dict, path: str, row_index: int) -> EditRecord:
    """One parquet row -> a validated record; raises `BadRow` with the reason."""
    folder = os.path.dirname(path)
    source = _image_bytes(row.get("input_img"), "input_img", folder)
    target = _image_bytes(row.get("output_img"), "output_img", folder)
    text = row.get("instruction")
    if text is None:
        raise BadRow("null_instruction", "instruction is null")
    if not isinstance(text, str):
        raise BadRow("bad_instruction", f"instruction is {type(text).__name__}, not str")
    if not text.strip():
        raise BadRow("empty_instruction", "instruction is empty")
    category = normalize_category(row.get("type")) or category_from_filename(path)
    if category is None:
        raise BadRow("unknown_category", f"type {row.get('type')!r} is none of {CATEGORIES}")
    stem = os.path.splitext(os.path.basename(path))[0]
    return EditRecord(
        source=_store_bytes(source),
        target=_store_bytes(target),
        instruction=text.strip(),
        category=category,
        id=f"{stem}:{row_index}",
    )


@dataclasses.dataclass(frozen=True)
class Segment:
    """Rows [start, stop) of one row group of one file."""

    path: str
    row_group: int
    first_row: int  # index in the file of the row group's first row
    start: int
    stop: int


def row_groups(paths: Sequence[str]) -> list[tuple[str, int, int, int]]:
    """(path, row group, first row in file, rows) for every row group, from metadata only."""
    out = []
    for path in paths:
        check_layout(path)
        meta = pq.ParquetFile(path).metadata
        first = 0
        for group in range(meta.num_row_groups):
            rows = meta.row_group(group).num_rows
            out.append((path, group, first, rows))
            first += rows
    return out


def plan_shards(paths: Sequence[str], num_shards: int) -> list[list[Segment]]:
    """Splits all rows, in file order, into `num_shards` contiguous ranges of near-equal size."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    groups = row_groups(paths)
    total = sum(rows for *_, rows in groups)
    bounds = [shard * total // num_shards for shard in range(num_shards + 1)]
    plan: list[list[Segment]] = [[] for _ in range(num_shards)]
    offset = 0
    for path, group, first, rows in groups:
        for shard in range(num_shards):
            lo, hi = max(bounds[shard], offset), min(bounds[shard + 1], offset + rows)
            if lo < hi:
                plan[shard].append(Segment(path, group, first, lo - offset, hi - offset))
        offset += rows
    return plan


def iter_segment_rows(
    segment: Segment, batch_size: int = 8
) -> Iterator[tuple[int, dict | None, str | None]]:
    """(row index in file, row or None, error or None) for the rows of `segment`, in order.

    Reads only this row group (a 1.2 GB file of 15 row groups is ~80 MB a unit) and converts
    rows to Python `batch_size` at a time; pyarrow still decodes a row group's image columns
    whole (measured: ~2x the row group's bytes at peak with `buffer_size` 8 MiB, ~3x without).
    When the row group cannot be read (at the start or part way), every row not yet yielded
    comes with the error instead.
    """
    done = segment.start  # the next row (index in the row group) to yield
    try:
        parquet = pq.ParquetFile(segment.path, buffer_size=8 << 20)
        batches = parquet.iter_batches(
            batch_size=batch_size, row_groups=[segment.row_group], use_threads=False
        )
        position = 0  # index in the row group of the batch's first row
        for batch in batches:
            lo = max(segment.start - position, 0)
            hi = min(segment.stop - position, batch.num_rows)
            if lo < hi:
                for i, row in enumerate(batch.slice(lo, hi - lo).to_pylist()):
                    yield segment.first_row + position + lo + i, row, None
                    done = position + lo + i + 1
            position += batch.num_rows
            if position >= segment.stop:
                break
        if done < segment.stop:  # the footer promised more rows than the row group holds
            raise OSError(f"row group ended after {position} rows, before row {segment.stop}")
    except (OSError, pa.ArrowException) as err:
        for i in range(done, segment.stop):
            yield segment.first_row + i, None, f"row group {segment.row_group} unreadable: {err}"


@dataclasses.dataclass
class ShardStats:
    """What one shard conversion did; `bad_examples` holds (file, row, reason, message)."""

    path: str
    written: int = 0
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    bad_examples: list[tuple[str, int, str, str]] = dataclasses.field(default_factory=list)
    rows: int = 0
    reused: bool = False

    def to_json(self) -> dict:
        return {
            "path": os.path.basename(self.path),
            "written": self.written,
            "skipped": dict(sorted(self.skipped.items())),
            "bad_examples": self.bad_examples,
            "rows": self.rows,
        }


def stats_path(shard_path: str) -> str:
    return shard_path + ".stats.json"


def convert_rows(segments: Sequence[Segment], stats: ShardStats) -> Iterator[bytes]:
    """The encoded records of the good rows of `segments`, in order; counts into `stats`.

    Every row is checked by `row_to_record`; a bad row is counted by reason (the first
    `MAX_LOGGED_BAD_ROWS` kept as examples with file and row) and left out.
    """
    for segment in segments:
        for row_index, row, error in iter_segment_rows(segment):
            stats.rows += 1
            try:
                if error is not None:
                    raise BadRow("unreadable_row_group", error)
                data = encode_record(row_to_record(row, segment.path, row_index))
            except BadRow as bad:
                stats.skipped[bad.reason] += 1
                if len(stats.bad_examples) < MAX_LOGGED_BAD_ROWS:
                    stats.bad_examples.append((segment.path, row_index, bad.reason, str(bad)))
                continue
            stats.written += 1
            yield data


def load_stats(shard_path: str) -> ShardStats | None:
    """The stats of a finished shard (shard and stats file both there), else None."""
    if not (os.path.exists(shard_path) and os.path.exists(stats_path(shard_path))):
        return None
    with open(stats_path(shard_path)) as f:
        saved = json.load(f)
    return ShardStats(
        path=shard_path,
        written=saved["written"],
        skipped=collections.Counter(saved["skipped"]),
        bad_examples=[tuple(example) for example in saved.get("bad_examples", [])],
        rows=saved["rows"],
        reused=True,
    )


def write_stats(stats: ShardStats) -> None:
    """Writes `stats` beside its shard, atomically; the shard counts as finished from then on."""
    with atomic_path(stats_path(stats.path)) as tmp, open(tmp, "w") as f:
        json.dump(stats.to_json(), f, sort_keys=True)


def split_readable(paths: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(files whose footer parquet can read, [(file, error)] for the others).

    One corrupt file of a large crawl is skipped and reported, not fatal; a readable file with
    the wrong columns still raises `LayoutError` (see `check_layout`).
    """
    readable, unreadable = [], []
    for path in paths:
        try:
            pq.ParquetFile(path).metadata  # noqa: B018  reading the footer is the check
        except (OSError, pa.ArrowException) as err:
            unreadable.append((path, str(err)))
            continue
        readable.append(path)
    if not readable:
        raise LayoutError(f"none of the {len(paths)} parquet files is readable: {unreadable[:3]}")
    return readable, unreadable


def shard_jobs(
    root: str, out: str, num_shards: int, name: str = "crispedit", split: str = "train"
) -> tuple[list[tuple[str, list[Segment]]], list[tuple[str, str]]]:
    """(shard path, segments) per shard, and the unreadable files skipped with their errors.

    Writes the manifest in `out`, or checks it on a rerun: raises `LayoutError` when `out` holds
    a conversion of other inputs or another shard count.
    """
    paths, unreadable = split_readable(find_parquet_files(root))
    plan = plan_shards(paths, num_shards)
    manifest = {
        "files": [os.path.relpath(p, root) for p in paths],
        "rows": sum(s.stop - s.start for segs in plan for s in segs),
        "num_shards": num_shards,
        "name": name,
        "split": split,
    }
    manifest_path = os.path.join(out, MANIFEST)
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            previous = json.load(f)
        if previous != manifest:
            raise LayoutError(
                f"{out} holds a conversion of other inputs or settings ({previous['rows']} rows, "
                f"{previous['num_shards']} shards); use another --out or delete it"
            )
    else:
        os.makedirs(out, exist_ok=True)
        with atomic_path(manifest_path) as tmp, open(tmp, "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
    jobs = [
        (os.path.join(out, shard_name(name, split, i, num_shards)), segments)
        for i, segments in enumerate(plan)
    ]
    return jobs, unreadable


def iter_records(root_or_paths: str | Sequence[str]) -> Iterator[EditRecord | BadRow]:
    """Streams every row of a parquet set (file order) as a record, or the `BadRow` it raised.

    Uses grain's `ParquetIterDataset` (row group by row group) for one file at a time.
    """
    from grain.experimental import ParquetIterDataset

    paths = find_parquet_files(root_or_paths) if isinstance(root_or_paths, str) else root_or_paths
    for path in paths:
        check_layout(path)
        for row_index, row in enumerate(ParquetIterDataset(path)):
            try:
                yield row_to_record(row, path, row_index)
            except BadRow as bad:
                yield bad
