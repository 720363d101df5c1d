"""Edit record schema: validation and the msgpack serialization."""

import numpy as np
import pytest

from data_pipelines.schema import (
    CATEGORIES,
    EditRecord,
    SchemaError,
    decode_record,
    encode_record,
    validate_record,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"rest"
JPEG = b"\xff\xd8\xff\xe0" + b"rest"


def _record(**overrides) -> EditRecord:
    fields = dict(source=PNG, target=JPEG, instruction="make the red circle blue", category="color")
    fields.update(id="r-1")
    fields.update(overrides)
    return EditRecord(**fields)


def test_round_trip_with_tokens_and_mask_is_exact_and_deterministic():
    tokens = np.arange(12, dtype=np.int32).reshape(3, 4)
    rec = _record(mask=PNG, source_tokens=tokens, target_tokens=(tokens * 2).astype(np.int16))
    data = encode_record(rec)
    assert data == encode_record(rec)
    back = decode_record(data)
    assert back == rec
    assert back.target_tokens.dtype == np.int16 and back.source_tokens.shape == (3, 4)


def test_seven_categories():
    assert len(CATEGORIES) == 7 and "background change" in CATEGORIES


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(source=b""), "source"),
        (dict(target=b"GIF89a"), "target"),
        (dict(instruction="  "), "instruction"),
        (dict(category="recolor"), "recolor"),
        (dict(id=""), "id"),
        (dict(mask=JPEG), "mask"),
        (dict(source_tokens=np.zeros((2, 2), np.float32)), "source_tokens"),
        (dict(target_tokens=np.zeros((4,), np.int32)), "target_tokens"),
    ],
)
def test_validation_names_the_offending_field(overrides, field):
    with pytest.raises(SchemaError, match=field):
        validate_record(_record(**overrides))


def test_decode_refuses_other_bytes():
    with pytest.raises(SchemaError):
        decode_record(b"\x00\x01 not msgpack of a record")
    with pytest.raises(SchemaError, match="version"):
        decode_record(b"\x81\xa1v\x63")  # {"v": 99}
