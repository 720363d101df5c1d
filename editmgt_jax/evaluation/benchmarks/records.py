"""What the benchmark readers share: the example type, parquet row streaming, image cells, and
skip-and-count of bad rows.

A reader is a plain iterator over `Example`s with a `skipped` counter (reason -> rows): a row
that cannot become an example (undecodable or missing image, empty instruction, bad mask, ...)
is counted and passed over; a folder that is not in the benchmark's layout raises
`LayoutError` naming what is missing.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import io
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from editmgt_jax.editing import images as imio

# Rows decoded per parquet batch (bounded memory: a batch of encoded images at a time).
PARQUET_BATCH_ROWS = 16
# Mask pixels at or above this grey level (of 255) are inside the edit region.
MASK_THRESHOLD = 128


class LayoutError(ValueError):
    """A data folder that is not in the benchmark's released layout."""


class BadRow(ValueError):
    """A row that cannot become an example; `reason` is a short key for counting."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass
class Example:
    """One benchmark edit.

    Attributes:
      key: the output file stem (`OUT/<setting>/<key>.png`).
      instruction: the edit instruction given to the model.
      source: uint8 [H, W, 3], or None when the input is the previous edit (MagicBrush's
        iterative turns after the first).
      category: the group `per_type` summaries use.
      mask: bool [H, W] at the source's size (True = the edit region), when the benchmark has one.
      target: uint8 [H, W, 3] ground-truth output, when the benchmark has one.
      texts: captions / prompts the metrics use (e.g. "output_caption").
      meta: fields copied into the per-image records (ids, turn, language, ...).
    """

    key: str
    instruction: str
    source: np.ndarray | None
    category: str
    mask: np.ndarray | None = None
    target: np.ndarray | None = None
    texts: dict[str, str] = dataclasses.field(default_factory=dict)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


def find_parquet_files(root: str, what: str) -> list[str]:
    """Every `*.parquet` below `root` (a folder) or `root` itself (a file), sorted."""
    if os.path.isfile(root) and root.endswith(".parquet"):
        return [root]
    if not os.path.isdir(root):
        raise LayoutError(f"{what}: --data {root!r} is neither a folder nor a .parquet file")
    paths = sorted(glob.glob(os.path.join(root, "**", "*.parquet"), recursive=True))
    if not paths:
        raise LayoutError(f"{what}: no *.parquet files under {root!r}")
    return paths


def check_columns(path: str, required: Sequence[str], what: str) -> list[str]:
    """The file's column names; raises `LayoutError` listing the required ones it lacks."""
    try:
        names = pq.read_schema(path).names
    except (OSError, pa.ArrowException) as err:
        raise LayoutError(f"{what}: {path} is not a readable parquet file ({err})") from err
    missing = [c for c in required if c not in names]
    if missing:
        raise LayoutError(
            f"{what}: {path} lacks columns {missing}; it has {names}, expected {list(required)}"
        )
    return names


def parquet_rows(path: str, columns: Sequence[str]) -> Iterator[dict]:
    """Rows of one parquet file as dicts of `columns`, a batch of rows in memory at a time."""
    reader = pq.ParquetFile(path)
    for batch in reader.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=list(columns)):
        yield from batch.to_pylist()


def count_rows(paths: Sequence[str]) -> int:
    """Total rows of parquet files, from their metadata (nothing decoded)."""
    return sum(pq.ParquetFile(p).metadata.num_rows for p in paths)


def image_bytes(cell: Any, column: str, folder: str) -> bytes:
    """The encoded bytes of a HF image cell ({"bytes", "path"} or raw bytes); a path-only cell is
    read relative to `folder`. Raises `BadRow`."""
    data, path = (cell.get("bytes"), cell.get("path")) if isinstance(cell, dict) else (cell, None)
    if data is None and isinstance(path, str) and path:
        local = path if os.path.isabs(path) else os.path.join(folder, path)
        if os.path.isfile(local):
            with open(local, "rb") as f:
                data = f.read()
    if not isinstance(data, bytes | bytearray | memoryview) or not bytes(data):
        raise BadRow("missing_image", f"{column} has no image bytes")
    return bytes(data)


def decode_image(data: bytes, column: str) -> np.ndarray:
    """uint8 RGB [H, W, 3] of encoded bytes (EXIF-oriented; grey / alpha / 16-bit handled as the
    Editor does). Raises `BadRow('undecodable_image')`."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return imio.load_image(image)[0]
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise BadRow("undecodable_image", f"{column} cannot be decoded: {err}") from err


def image_cell(cell: Any, column: str, folder: str) -> np.ndarray:
    """uint8 [H, W, 3] of an image cell; raises `BadRow`."""
    return decode_image(image_bytes(cell, column, folder), column)


def mask_cell(cell: Any, column: str, folder: str, size: tuple[int, int]) -> np.ndarray:
    """bool [H, W] (white = region) of a mask image cell at `size` = (H, W) (nearest-resized when
    it differs); raises `BadRow`."""
    data = image_bytes(cell, column, folder)
    try:
        with Image.open(io.BytesIO(data)) as image:
            grey = image.convert("L")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise BadRow("undecodable_mask", f"{column} cannot be decoded: {err}") from err
    if grey.size != (size[1], size[0]):
        grey = grey.resize((size[1], size[0]), Image.Resampling.NEAREST)
    return np.asarray(grey) >= MASK_THRESHOLD


def text_cell(row: dict, column: str, required: bool = True) -> str:
    """A stripped string column; raises `BadRow('empty_<column>')` when required and empty."""
    value = row.get(column)
    text = value.strip() if isinstance(value, str) else ""
    if required and not text:
        raise BadRow(f"empty_{column}", f"{column} is empty or not text ({value!r})")
    return text


class Reader:
    """Base of the benchmark readers: iterate for `Example`s; `skipped` counts bad rows by
    reason; `total` is the number of rows the layout holds (for progress bars), when known."""

    what = "benchmark"

    def __init__(self) -> None:
        self.skipped: collections.Counter[str] = collections.Counter()
        self.total: int | None = None

    def skip(self, err: BadRow) -> None:
        self.skipped[err.reason] += 1

    def __iter__(self) -> Iterator[Example]:  # pragma: no cover - every reader overrides it
        raise NotImplementedError
