"""Writes small CrispEdit-layout parquet sets with photo-like images, odd-but-valid rows and planted
faults, for tests and benchmarks (no dataset can be downloaded here).

Example:
    >>> import tempfile
    >>> plan = write_fake_crispedit(tempfile.mkdtemp(), seed=0, rows_per_file=2, size=48)
    >>> sorted(plan.bad)[:2], len(plan.good) > 0
    (['absurd_size', 'empty_bytes'], True)
"""

from __future__ import annotations

import collections
import dataclasses
import io
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

GOOD_KINDS = ("jpeg", "png", "gray", "rgba", "png16", "cmyk", "sizes", "exif")
BAD_KINDS = {
    "truncated": "truncated",
    "empty": "empty_bytes",
    "null_instruction": "null_instruction",
    "missing_image": "missing_image",
    "missing_bytes": "missing_image",
    "junk": "undecodable",
    "tiny": "absurd_size",
}
FILE_CATEGORIES = (
    "add",
    "background_change",
    "color",
    "motion_change",
    "remove",
    "replace",
    "style",
)


@dataclasses.dataclass
class FakeSet:
    """`good`: ids (`<file stem>:<row>`) that must survive; `bad`: reason -> count planted;
    `kinds`: id -> the kind of row planted there (a GOOD_KINDS or BAD_KINDS key)."""

    root: str
    good: list[str]
    bad: collections.Counter
    files: list[str]
    kinds: dict[str, str]


def photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth, textured, photo-like uint8 [height, width, 3] image."""
    coarse = rng.random((6, 8, 3)) * 255
    base = np.asarray(
        Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.Resampling.BICUBIC),
        dtype=np.float64,
    )
    grain = rng.normal(0, 6, (height, width, 3))
    yy, xx = np.mgrid[0:height, 0:width]
    cy, cx, r = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width, 0.2 * height
    disk = ((yy - cy) ** 2 + (xx - cx) ** 2) < r**2
    base[disk] = base[disk] * 0.4 + rng.random(3) * 150
    return np.clip(base + grain, 0, 255).astype(np.uint8)


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _pair(kind: str, rng: np.random.Generator, size: int) -> tuple[bytes, bytes]:
    height, width = size, int(size * 1.25)
    src = photo(rng, height, width)
    tgt = src.copy()
    tgt[: height // 2, : width // 2] = 255 - tgt[: height // 2, : width // 2]
    a, b = Image.fromarray(src), Image.fromarray(tgt)
    if kind == "jpeg":
        return _encode(a, "JPEG", quality=90), _encode(b, "JPEG", quality=90)
    if kind == "png":
        return _encode(a, "PNG"), _encode(b, "PNG")
    if kind == "gray":
        return _encode(a.convert("L"), "PNG"), _encode(b.convert("L"), "PNG")
    if kind == "rgba":
        alpha = Image.fromarray(np.full((height, width), 200, np.uint8))
        a.putalpha(alpha)
        b.putalpha(alpha)
        return _encode(a, "PNG"), _encode(b, "PNG")
    if kind == "png16":
        wide = lambda x: Image.fromarray(x[..., 0].astype(np.uint16) * 257)
        return _encode(wide(src), "PNG"), _encode(wide(tgt), "PNG")
    if kind == "cmyk":
        return _encode(a.convert("CMYK"), "JPEG"), _encode(b.convert("CMYK"), "JPEG")
    if kind == "sizes":
        bigger = b.resize((width * 3 // 2, height * 3 // 2), Image.Resampling.BICUBIC)
        return _encode(a, "JPEG"), _encode(bigger, "PNG")
    if kind == "exif":
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: rotate 90 degrees on display
        return _encode(a, "JPEG", exif=exif), _encode(b, "JPEG", exif=exif)
    raise ValueError(f"unknown good kind {kind!r}; expected one of {GOOD_KINDS}")


def _row(kind: str, rng: np.random.Generator, size: int, category: str) -> dict:
    good_kind = kind if kind in GOOD_KINDS else "jpeg"
    source, target = _pair(good_kind, rng, size)
    row = {
        "input_img": {"bytes": source, "path": "in.jpg"},
        "output_img": {"bytes": target, "path": "out.jpg"},
        "instruction": f"apply a {category.replace('_', ' ')} edit",
        "type": category.replace("_", " "),
    }
    if kind == "truncated":
        row["output_img"]["bytes"] = target[: len(target) // 2]
    elif kind == "empty":
        row["input_img"]["bytes"] = b""
    elif kind == "null_instruction":
        row["instruction"] = None
    elif kind == "missing_image":
        row["output_img"] = None
    elif kind == "missing_bytes":
        row["input_img"] = {"bytes": None, "path": "nowhere/absent.jpg"}
    elif kind == "junk":
        row["input_img"]["bytes"] = rng.bytes(300)
    elif kind == "tiny":
        row["output_img"]["bytes"] = _encode(Image.new("RGB", (4, 4)), "PNG")
    return row


def write_fake_crispedit(
    root: str,
    seed: int = 0,
    rows_per_file: int = 16,
    size: int = 64,
    categories: tuple[str, ...] = FILE_CATEGORIES,
    with_faults: bool = True,
    row_group_size: int = 5,
) -> FakeSet:
    """Writes `<root>/data/<category>_00000.parquet`, one file per category.

    Rows cycle through GOOD_KINDS, and (with_faults) every BAD_KINDS kind once per file, so
    every file holds at least one of each fault.
    """
    rng = np.random.default_rng(seed)
    kinds = list(GOOD_KINDS) + (list(BAD_KINDS) if with_faults else [])
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema(
        [("input_img", struct), ("output_img", struct), ("instruction", pa.string()),
         ("type", pa.string())]
    )  # fmt: skip
    good: list[str] = []
    bad: collections.Counter = collections.Counter()
    files = []
    planted: dict[str, str] = {}
    os.makedirs(os.path.join(root, "data"), exist_ok=True)
    for category in categories:
        rows = []
        count = max(rows_per_file, len(kinds) if with_faults else 1)
        for index in range(count):
            kind = kinds[index % len(kinds)]
            rows.append(_row(kind, rng, size, category))
            stem = f"{category}_00000"
            planted[f"{stem}:{index}"] = kind
            if kind in BAD_KINDS:
                bad[BAD_KINDS[kind]] += 1
            else:
                good.append(f"{stem}:{index}")
        path = os.path.join(root, "data", f"{category}_00000.parquet")
        pq.write_table(
            pa.Table.from_pylist(rows, schema=schema), path, row_group_size=row_group_size
        )
        files.append(path)
    return FakeSet(root=root, good=good, bad=bad, files=files, kinds=planted)
