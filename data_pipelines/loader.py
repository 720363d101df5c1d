"""The grain input pipeline: edit records -> decoded, jointly cropped, batched, global jax.Arrays.

ArrayRecord shards (random access) get a global shuffle with a seed that changes every epoch; each
process reads a disjoint 1/process_count of every epoch (`jax.process_index()` order). Decoding runs
in grain worker processes when `worker_count > 0`. The iterator state (`get_state`/`set_state`) is
a small JSON-able dict: restoring it replays the same next batches.

Example:
    >>> from data_pipelines.synthetic.source import SyntheticSource
    >>> loader = EditLoader(SyntheticSource(seed=0, num=16, size=32),
    ...                     LoaderConfig(batch_size=4, resolution=32, seed=0))
    >>> batch = next(loader)
    >>> batch["source"].shape, batch["mask"].shape, batch["instruction"].shape
    ((4, 32, 32, 3), (4, 32, 32), (4,))
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grain
import jax
import numpy as np
from absl import flags
from grain.experimental import InterleaveIterDataset, ParquetIterDataset
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from data_pipelines import crispedit, transforms
from data_pipelines.array_record_io import list_shards
from data_pipelines.schema import CATEGORIES, SchemaError, decode_record, encode_record

# Fields that stay host-side numpy (strings cannot be jax.Arrays).
HOST_FIELDS = ("instruction", "id")


@dataclasses.dataclass(frozen=True)
class LoaderConfig:
    """How to read.

    Attributes:
      batch_size: global batch (all processes); must divide by the process count.
      resolution: output side (int) or (height, width).
      seed: shuffle and random-crop seed.
      num_epochs: passes over the data; None repeats forever.
      shuffle: global shuffle (a new permutation each epoch).
      random_crop: crop position drawn per example (else centred).
      worker_count: grain worker processes for decoding (0 = in this process).
      use_tokens: emit `source_tokens`/`target_tokens` from the records instead of images.
      drop_remainder: drop a last partial batch (keeps shapes static for jit).
      category_weights: relative sampling weight per category (a mapping from names in
        `CATEGORIES`; absent ones weigh 1). Each decoded record is kept with probability
        weight / max weight (a per-record draw, so the stream stays reproducible and resumable);
        None keeps every record.
      rephrase: rewords each record's instruction, `(instruction, rng) -> instruction`, drawn
        with the record's own generator (reproducible and resumable, like the crops); e.g.
        `data_pipelines.synthetic.phrasings.rephrase`. None keeps the stored words.
    """

    batch_size: int
    resolution: int | tuple[int, int] = 256
    seed: int = 0
    num_epochs: int | None = 1
    shuffle: bool = True
    random_crop: bool = True
    worker_count: int = 0
    use_tokens: bool = False
    drop_remainder: bool = True
    category_weights: Mapping[str, float] | None = None
    rephrase: Callable[[str, np.random.Generator], str] | None = None

    def __post_init__(self):
        if self.category_weights is not None:
            keep_probabilities(self.category_weights)  # fails early on a bad mapping

    @property
    def size(self) -> tuple[int, int]:
        r = self.resolution
        return (r, r) if isinstance(r, int) else (int(r[0]), int(r[1]))


def keep_probabilities(weights: Mapping[str, float]) -> np.ndarray:
    """Category weights -> keep probability per `CATEGORIES` index, [len(CATEGORIES)]."""
    unknown = sorted(set(weights) - set(CATEGORIES))
    if unknown:
        raise ValueError(
            f"category_weights names unknown categories {unknown}; known: {CATEGORIES}"
        )
    values = np.array([float(weights.get(c, 1.0)) for c in CATEGORIES])
    if not np.all(np.isfinite(values)) or np.any(values < 0) or values.max() <= 0:
        raise ValueError(
            f"category_weights must be finite, >= 0 and not all 0; got {dict(weights)}"
        )
    return values / values.max()


class ProcessEpochs(grain.MapDataset):
    """Epoch `e`, position `k` of process `index` -> element `k * count + index` of epoch `e`.

    `parent` may be epoch-aware (a shuffled dataset indexed past its length reshuffles), so every
    epoch is split the same way among processes: disjoint, and together all but the last
    `len % count` elements of the epoch (dropped so every process gets the same number).
    """

    def __init__(
        self, parent: grain.MapDataset, length: int, index: int, count: int, epochs: int | None
    ):
        super().__init__(parent)
        if not 0 <= index < count:
            raise ValueError(f"process index {index} is outside [0, {count})")
        if length < count:
            raise ValueError(f"{length} records cannot be split among {count} processes")
        self._length, self._index, self._count, self._epochs = length, index, count, epochs
        self._per_epoch = length // count

    def __len__(self) -> int:
        return sys.maxsize if self._epochs is None else self._per_epoch * self._epochs

    def __str__(self) -> str:
        return f"ProcessEpochs(index={self._index}, count={self._count}, epochs={self._epochs})"

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        epoch, position = divmod(index, self._per_epoch)
        return self._parent[epoch * self._length + position * self._count + self._index]


class DecodeExample(grain.transforms.RandomMap):
    """Serialized record -> dict of arrays (None for an undecodable record, dropped later)."""

    def __init__(
        self,
        size: tuple[int, int],
        random_crop: bool,
        use_tokens: bool,
        category_weights: Mapping[str, float] | None = None,
        rephrase: Callable[[str, np.random.Generator], str] | None = None,
    ):
        self.size, self.random_crop, self.use_tokens = size, random_crop, use_tokens
        self.keep = None if category_weights is None else keep_probabilities(category_weights)
        self.rephrase = rephrase

    def random_map(self, element: bytes, rng: np.random.Generator) -> dict[str, Any] | None:
        try:
            record = decode_record(element)
        except SchemaError:
            return None
        category = CATEGORIES.index(record.category)
        if self.keep is not None and rng.uniform() >= self.keep[category]:
            return None  # thinned out: this category is sampled less often
        instruction = record.instruction
        if self.rephrase is not None:
            try:
                instruction = self.rephrase(instruction, rng)
            except ValueError as error:  # a misconfigured run, not a bad record: stop
                raise ValueError(f"cannot rephrase record {record.id!r}: {error}") from error
        out: dict[str, Any] = {
            "instruction": np.asarray(instruction),
            "id": np.asarray(record.id),
            "category": np.int32(category),
        }
        if self.use_tokens:
            if record.source_tokens is None or record.target_tokens is None:
                return None
            out["source_tokens"] = record.source_tokens.astype(np.int32)
            out["target_tokens"] = record.target_tokens.astype(np.int32)
            return out
        offset = (float(rng.uniform()), float(rng.uniform())) if self.random_crop else (0.5, 0.5)
        try:
            min_side = max(self.size)
            source = transforms.decode_image(record.source, min_side)
            target = transforms.decode_image(record.target, min_side)
            mask = None if record.mask is None else transforms.decode_mask(record.mask)
        except transforms.DecodeError:
            return None
        source, target, mask = transforms.joint_resize_crop(source, target, mask, self.size, offset)
        out["source"], out["target"] = source, target
        out["has_mask"] = np.bool_(mask is not None)
        out["mask"] = mask if mask is not None else np.zeros(self.size, np.uint8)
        return out


def _decoder(config: LoaderConfig) -> DecodeExample:
    return DecodeExample(
        config.size, config.random_crop, config.use_tokens, config.category_weights, config.rephrase
    )


def _crop_seed(seed: int, process_index: int) -> int:
    # Differs per process, so processes never share crop draws; grain wants seeds below 2**32.
    return (seed * 1_000_003 + process_index) % 2**32


def _process(index: int | None, count: int | None) -> tuple[int, int]:
    index = jax.process_index() if index is None else index
    count = jax.process_count() if count is None else count
    return index, count


def host_dataset(
    source: Sequence[bytes] | grain.sources.RandomAccessDataSource | str,
    config: LoaderConfig,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.IterDataset:
    """This process's batches (numpy dicts, leading dim batch_size / process_count).

    Args:
      source: a folder or glob of ArrayRecord shards, a list of shard paths, or any random-access
        source of serialized records (e.g. `SyntheticSource`, a list of bytes).
      config: `LoaderConfig`.
      process_index, process_count: default to `jax.process_index()` / `jax.process_count()`.
    """
    index, count = _process(process_index, process_count)
    if config.batch_size % count:
        raise ValueError(f"batch_size {config.batch_size} does not divide among {count} processes")
    if isinstance(source, str):
        source = grain.sources.ArrayRecordDataSource(list_shards(source))
    elif isinstance(source, list | tuple) and source and all(isinstance(p, str) for p in source):
        source = grain.sources.ArrayRecordDataSource(list(source))  # shard paths
    ds = grain.MapDataset.source(source)
    length = len(ds)
    if config.shuffle:
        ds = ds.shuffle(seed=config.seed)
    ds = ProcessEpochs(ds, length, index, count, config.num_epochs)
    ds = ds.random_map(_decoder(config), seed=_crop_seed(config.seed, index))
    it = ds.to_iter_dataset().batch(
        config.batch_size // count, drop_remainder=config.drop_remainder
    )
    if config.worker_count > 0:
        if not flags.FLAGS.is_parsed():
            # grain workers read absl flags; outside an absl app (tests, notebooks) use defaults.
            flags.FLAGS.mark_as_parsed()
        it = it.mp_prefetch(grain.multiprocessing.MultiprocessingOptions(config.worker_count))
    return it


class RowToRecord(grain.transforms.MapWithIndex):
    """(row index, parquet row) of file `path` -> serialized record, or None for a bad row."""

    def __init__(self, path: str):
        self.path = path

    def map_with_index(self, index: int, row: dict) -> bytes | None:
        try:
            return encode_record(crispedit.row_to_record(row, self.path, index))
        except crispedit.BadRow:
            return None  # counted by launch.prepare_data; a training stream just moves on


class ParquetRows(grain.transforms.Map):
    """A parquet file path -> its stream of serialized records (grain's ParquetIterDataset)."""

    def map(self, path: str) -> grain.IterDataset:
        return ParquetIterDataset(path).map_with_index(RowToRecord(path))


def _is_record(element: bytes | None) -> bool:
    return element is not None


def parquet_dataset(
    root_or_files: str | Sequence[str],
    config: LoaderConfig,
    process_index: int | None = None,
    process_count: int | None = None,
    cycle_length: int = 16,
) -> grain.IterDataset:
    """This process's batches streamed straight from CrispEdit-layout parquet files.

    Files are split among processes (process p reads files p, p + count, ...), shuffled per epoch
    with the seed and interleaved `cycle_length` at a time; rows stream row group by row group.
    Bad rows are dropped. Prefer converted ArrayRecord shards for a global shuffle.
    """
    index, count = _process(process_index, process_count)
    if config.batch_size % count:
        raise ValueError(f"batch_size {config.batch_size} does not divide among {count} processes")
    if isinstance(root_or_files, str):
        files = crispedit.find_parquet_files(root_or_files)
    else:
        files = list(root_or_files)
    mine = files[index::count]
    if not mine:
        raise ValueError(f"{len(files)} parquet files cannot be split among {count} processes")
    for path in mine:
        crispedit.check_layout(path)
    ds = grain.MapDataset.source(mine)
    if config.shuffle:
        ds = ds.shuffle(seed=config.seed)
    ds = ds.repeat(config.num_epochs).map(ParquetRows())
    it = InterleaveIterDataset(ds, cycle_length=min(cycle_length, len(mine)))
    it = it.filter(_is_record).random_map(_decoder(config), seed=_crop_seed(config.seed, index))
    it = it.filter(_is_record).batch(
        config.batch_size // count, drop_remainder=config.drop_remainder
    )
    return _with_workers(it, config)


def _with_workers(it: grain.IterDataset, config: LoaderConfig) -> grain.IterDataset:
    if config.worker_count > 0:
        if not flags.FLAGS.is_parsed():
            # grain workers read absl flags; outside an absl app (tests, notebooks) use defaults.
            flags.FLAGS.mark_as_parsed()
        it = it.mp_prefetch(grain.multiprocessing.MultiprocessingOptions(config.worker_count))
    return it


def batch_sharding(mesh: Mesh, batch_axes: Sequence[str] = ("data", "fsdp")) -> NamedSharding:
    """Batch dimension split over those of `batch_axes` that the mesh has."""
    axes = tuple(a for a in batch_axes if a in mesh.axis_names)
    if not axes:
        raise ValueError(f"mesh axes {mesh.axis_names} contain none of the batch axes {batch_axes}")
    return NamedSharding(mesh, PartitionSpec(axes))


def to_global(
    batch: dict[str, np.ndarray], sharding: NamedSharding
) -> dict[str, jax.Array | np.ndarray]:
    """Host batch -> global jax.Arrays (batch axis over all processes); strings stay numpy."""
    out: dict[str, jax.Array | np.ndarray] = {}
    for key, value in batch.items():
        if key in HOST_FIELDS:
            out[key] = value
        else:
            out[key] = jax.make_array_from_process_local_data(sharding, value)
    return out


class EditLoader:
    """Iterator of global batches with a checkpointable position.

    Without a mesh, batches are this host's numpy dicts; with one, numeric fields are global
    `jax.Array`s sharded over `batch_axes` (see `to_global`). `source` is read with `host_dataset`
    (ArrayRecord shards or a random-access source), or with `parquet_dataset` when `parquet`.

    Batch fields: source/target uint8 [b, H, W, 3], mask uint8 [b, H, W] (0 where no mask),
    has_mask bool [b], category int32 [b] (index in CATEGORIES), instruction/id str [b]
    (host numpy); with `use_tokens`: source_tokens/target_tokens int32 [b, h, w] instead of images.
    """

    def __init__(
        self,
        source: Sequence[bytes] | grain.sources.RandomAccessDataSource | str,
        config: LoaderConfig,
        mesh: Mesh | None = None,
        batch_axes: Sequence[str] = ("data", "fsdp"),
        process_index: int | None = None,
        process_count: int | None = None,
        parquet: bool = False,
    ):
        self.config = config
        make = parquet_dataset if parquet else host_dataset
        self._dataset = make(source, config, process_index, process_count)
        self._iterator = iter(self._dataset)
        self._sharding = None if mesh is None else batch_sharding(mesh, batch_axes)

    def __iter__(self) -> EditLoader:
        return self

    def __next__(self) -> dict[str, Any]:
        batch = next(self._iterator)
        if self.config.worker_count > 0:
            # Own the memory: worker batches live in shared memory freed when dropped.
            batch = {key: np.array(value) for key, value in batch.items()}
        return batch if self._sharding is None else to_global(batch, self._sharding)

    def get_state(self) -> dict[str, Any]:
        """The position after the last batch returned (JSON-able)."""
        return self._iterator.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        """Continues from a position saved by `get_state` (same source and config)."""
        self._iterator.set_state(state)

    @property
    def grain_iterator(self) -> grain.DatasetIterator:
        """The underlying grain iterator, e.g. for orbax's grain checkpoint handler."""
        return self._iterator

    def close(self) -> None:
        """Stops the worker processes (if any)."""
        self._iterator.close()

    def __enter__(self) -> EditLoader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
