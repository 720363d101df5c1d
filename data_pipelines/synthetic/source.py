"""A grain random-access source that makes synthetic edit records on the fly (no files)."""

from __future__ import annotations

from data_pipelines.schema import encode_record
from data_pipelines.synthetic.generate import DEFAULT_SIZE, make_example, to_record


class SyntheticSource:
    """Record `i` is the serialized `make_example(seed, i, size, split)`; picklable for workers.

    Example:
        >>> from data_pipelines.schema import decode_record
        >>> decode_record(SyntheticSource(seed=0, num=7, size=32)[6]).category
        'style'
    """

    def __init__(self, seed: int, num: int, size: int = DEFAULT_SIZE, split: str = "train"):
        if num < 1:
            raise ValueError(f"num must be >= 1, got {num}")
        self.seed, self.num, self.size, self.split = seed, num, size, split

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, index: int) -> bytes:
        if not 0 <= index < self.num:
            raise IndexError(f"index {index} is outside [0, {self.num})")
        return encode_record(to_record(make_example(self.seed, index, self.size, self.split)))

    def __repr__(self) -> str:
        return (
            f"SyntheticSource(seed={self.seed}, num={self.num}, size={self.size}, "
            f"split={self.split!r})"
        )
