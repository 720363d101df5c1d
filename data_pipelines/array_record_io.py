"""ArrayRecord shards of serialized edit records: names, atomic writing, listing.

Shards are named like TFDS names them, `<name>-<split>.array_record-00003-of-00016`, so a folder of
shards is also what `tfds` and grain's `ArrayRecordDataSource` expect.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from array_record.python import array_record_module

from editmgt_jax import paths

# group_size:1 keeps every record individually addressable (random access for global shuffle).
WRITER_OPTIONS = "group_size:1"
_SHARD_RE = re.compile(r"\.array_record-(\d{5})-of-(\d{5})$")


def shard_name(name: str, split: str, index: int, num_shards: int) -> str:
    """`<name>-<split>.array_record-<index>-of-<num_shards>`, zero-padded to 5 digits."""
    if not 0 <= index < num_shards:
        raise ValueError(f"shard index {index} is outside [0, {num_shards})")
    return f"{name}-{split}.array_record-{index:05d}-of-{num_shards:05d}"


def write_shard(path: str, records: Iterable[bytes]) -> int:
    """Writes serialized records to `path` (a file or a gs:// URL) atomically; returns how many
    were written.

    A crash or full disk leaves no file at `path` (the temporary file beside it is removed). For a
    URL the shard is written to a local temp file and uploaded whole (one object upload: atomic).
    """
    count = 0
    with paths.local_file_for(path) as tmp:
        writer = array_record_module.ArrayRecordWriter(tmp, WRITER_OPTIONS)
        try:
            for data in records:
                writer.write(data)
                count += 1
        finally:
            writer.close()
    return count


def list_shards(folder_or_pattern: str) -> list[str]:
    """Sorted shard paths in a folder or gs:// prefix (or matching a glob); raises when there are
    none. ArrayRecord's reader opens gs:// URLs itself (its bundled Cloud Storage client)."""
    if paths.isdir(folder_or_pattern):
        pattern = paths.join(folder_or_pattern, "*.array_record*")
    else:
        pattern = folder_or_pattern
    found = [p for p in paths.glob(pattern) if not paths.basename(p).startswith(".")]
    found = [p for p in found if _SHARD_RE.search(p) or p.endswith(".array_record")]
    if not found:
        raise FileNotFoundError(f"no ArrayRecord shards match {pattern!r}")
    return found


def read_all(paths: Iterable[str]) -> list[bytes]:
    """Every record of the given shards, in order (small sets, tests and tools only)."""
    out: list[bytes] = []
    for path in paths:
        reader = array_record_module.ArrayRecordReader(path)
        try:
            out.extend(reader.read_all())
        finally:
            reader.close()
    return out
