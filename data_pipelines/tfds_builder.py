"""A TFDS builder over converted edit-record shards (ArrayRecord, readable without TensorFlow).

TFDS stores tf.Example protos, not our msgpack records, so `download_and_prepare` re-writes the
records of a shard folder into a TFDS ArrayRecord dataset. That works with tensorflow-datasets
alone (no TensorFlow installed), and `tfds.data_source` reads it back with random access.

Example:
    >>> import tempfile
    >>> from data_pipelines.array_record_io import write_shard
    >>> from data_pipelines.schema import encode_record
    >>> from data_pipelines.synthetic import make_example, to_record
    >>> shards = tempfile.mkdtemp()
    >>> _ = write_shard(f"{shards}/demo-train.array_record-00000-of-00001",
    ...                 [encode_record(to_record(make_example(0, i, 32))) for i in range(3)])
    >>> data_dir = build_tfds(shards, tempfile.mkdtemp())  # doctest: +ELLIPSIS
    Downloading and preparing dataset ...
    Dataset edit_shards downloaded and prepared to ...
    >>> import tensorflow_datasets as tfds
    >>> source = tfds.data_source("edit_shards", data_dir=data_dir, split="train")
    >>> len(source), sorted(source[0])[:3]
    (3, ['category', 'id', 'instruction'])
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.array_record_io import list_shards, read_all
from data_pipelines.schema import CATEGORIES, decode_record


class EditShards(tfds.core.GeneratorBasedBuilder):
    """Edit records as TFDS features; images stay encoded bytes (decode with `transforms`)."""

    VERSION = tfds.core.Version("1.0.0")
    # No source folder with checksums or metadata files: looking one up needs the optional
    # `importlib_resources` package (absent here) and finds nothing for a builder in a library.
    code_path = None
    RELEASE_NOTES = {"1.0.0": "Edit records converted from data_pipelines ArrayRecord shards."}

    def __init__(self, *, shards_dir: str | None = None, **kwargs):
        self._shards_dir = shards_dir
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Instruction-based image edits (source, instruction, target, mask).",
            features=tfds.features.FeaturesDict(
                {
                    "source": tfds.features.Tensor(shape=(), dtype=np.object_),
                    "target": tfds.features.Tensor(shape=(), dtype=np.object_),
                    "mask": tfds.features.Tensor(shape=(), dtype=np.object_),  # b"" when absent
                    "instruction": tfds.features.Text(),
                    "category": tfds.features.ClassLabel(names=list(CATEGORIES)),
                    "id": tfds.features.Text(),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        if self._shards_dir is None:
            raise ValueError("EditShards needs shards_dir=<folder of ArrayRecord shards> to build")
        return {"train": self._generate_examples(self._shards_dir)}

    def _generate_examples(self, shards_dir: str) -> Iterator[tuple[str, dict]]:
        for path in list_shards(shards_dir):
            for data in read_all([path]):
                record = decode_record(data)
                yield (
                    record.id,
                    {
                        "source": record.source,
                        "target": record.target,
                        "mask": record.mask or b"",
                        "instruction": record.instruction,
                        "category": record.category,
                        "id": record.id,
                    },
                )


def build_tfds(shards_dir: str, data_dir: str) -> str:
    """Builds `edit_shards` from `shards_dir` into `data_dir`; returns `data_dir`."""
    builder = EditShards(shards_dir=shards_dir, data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.path.abspath(shards_dir))
    )
    return data_dir
