"""The edit record: one (source, instruction, target) example, its validation and its bytes.

Every pipeline (CrispEdit conversion, the synthetic world, the loader, the TFDS builder) speaks this
schema. A record is serialized as a msgpack map with a fixed key order, so equal records give equal
bytes and reading never executes code (no pickle).

Example:
    >>> png = b"\\x89PNG\\r\\n\\x1a\\n..."
    >>> rec = EditRecord(source=png, target=png, instruction="make it red", category="color",
    ...                  id="demo-0")
    >>> decode_record(encode_record(rec)) == rec
    True
"""

from __future__ import annotations

import dataclasses

import msgpack
import numpy as np

CATEGORIES: tuple[str, ...] = (
    "add",
    "remove",
    "replace",
    "color",
    "background change",
    "motion change",
    "style",
)

# Bump when the byte layout changes; readers refuse versions they do not know.
SCHEMA_VERSION = 1
_TOKEN_DTYPES = ("int16", "int32")
_IMAGE_MAGICS = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8")


@dataclasses.dataclass(frozen=True)
class EditRecord:
    """One editing example.

    Attributes:
      source: encoded image bytes (PNG or JPEG) before the edit.
      target: encoded image bytes after the edit.
      instruction: the edit in words.
      category: one of `CATEGORIES`.
      id: a unique, stable name of the example.
      mask: optional PNG bytes, single channel, white (255) = edited region.
      source_tokens: optional int array [h, w] of VQ ids of `source`.
      target_tokens: optional int array [h, w] of VQ ids of `target`.
    """

    source: bytes
    target: bytes
    instruction: str
    category: str
    id: str
    mask: bytes | None = None
    source_tokens: np.ndarray | None = None
    target_tokens: np.ndarray | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EditRecord):
            return NotImplemented
        for field in dataclasses.fields(self):
            a, b = getattr(self, field.name), getattr(other, field.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if a is None or b is None or a.dtype != b.dtype or not np.array_equal(a, b):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None  # arrays inside: not hashable


class SchemaError(ValueError):
    """A record that does not follow the schema."""


def validate_record(record: EditRecord) -> EditRecord:
    """Checks field types and values; returns the record, or raises `SchemaError` naming it."""
    for name in ("source", "target"):
        value = getattr(record, name)
        if not isinstance(value, bytes) or not value:
            raise SchemaError(f"{name} must be non-empty bytes, got {type(value).__name__}")
        if not value.startswith(_IMAGE_MAGICS):
            raise SchemaError(f"{name} is not PNG or JPEG bytes (starts with {value[:8]!r})")
    if record.mask is not None and (
        not isinstance(record.mask, bytes) or not record.mask.startswith(_IMAGE_MAGICS[0])
    ):
        raise SchemaError(f"mask must be PNG bytes or None, got {record.mask[:8]!r}")
    if not isinstance(record.instruction, str) or not record.instruction.strip():
        raise SchemaError(f"instruction must be a non-empty string, got {record.instruction!r}")
    if record.category not in CATEGORIES:
        raise SchemaError(f"category {record.category!r} is not one of {CATEGORIES}")
    if not isinstance(record.id, str) or not record.id:
        raise SchemaError(f"id must be a non-empty string, got {record.id!r}")
    for name in ("source_tokens", "target_tokens"):
        tokens = getattr(record, name)
        if tokens is None:
            continue
        if not isinstance(tokens, np.ndarray) or tokens.dtype.name not in _TOKEN_DTYPES:
            raise SchemaError(f"{name} must be an int16/int32 array, got {tokens!r:.80}")
        if tokens.ndim != 2:
            raise SchemaError(f"{name} must be [h, w], got shape {tokens.shape}")
    return record


def _pack_tokens(tokens: np.ndarray | None) -> dict | None:
    if tokens is None:
        return None
    little = tokens.astype(tokens.dtype.newbyteorder("<"), copy=False)
    return {"dtype": tokens.dtype.name, "shape": list(tokens.shape), "data": little.tobytes()}


def _unpack_tokens(packed: dict | None) -> np.ndarray | None:
    if packed is None:
        return None
    dtype = np.dtype(packed["dtype"]).newbyteorder("<")
    flat = np.frombuffer(packed["data"], dtype=dtype)
    return flat.reshape(packed["shape"]).astype(packed["dtype"])


def encode_record(record: EditRecord) -> bytes:
    """Validates and serializes a record to msgpack bytes (deterministic)."""
    validate_record(record)
    payload = {
        "v": SCHEMA_VERSION,
        "id": record.id,
        "category": record.category,
        "instruction": record.instruction,
        "source": record.source,
        "target": record.target,
        "mask": record.mask,
        "source_tokens": _pack_tokens(record.source_tokens),
        "target_tokens": _pack_tokens(record.target_tokens),
    }
    return msgpack.packb(payload, use_bin_type=True)


def decode_record(data: bytes) -> EditRecord:
    """Parses bytes written by `encode_record`; raises `SchemaError` on anything else."""
    try:
        payload = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError) as err:
        raise SchemaError(f"not a msgpack edit record ({err})") from err
    if not isinstance(payload, dict) or payload.get("v") != SCHEMA_VERSION:
        version = payload.get("v") if isinstance(payload, dict) else type(payload).__name__
        raise SchemaError(f"unknown record version {version!r}, expected {SCHEMA_VERSION}")
    return EditRecord(
        source=payload["source"],
        target=payload["target"],
        instruction=payload["instruction"],
        category=payload["category"],
        id=payload["id"],
        mask=payload["mask"],
        source_tokens=_unpack_tokens(payload["source_tokens"]),
        target_tokens=_unpack_tokens(payload["target_tokens"]),
    )
