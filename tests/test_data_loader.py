"""The grain loader: process sharding, epochs, resumable state, global arrays, tokens."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from data_pipelines.array_record_io import shard_name, write_shard
from data_pipelines.loader import EditLoader, LoaderConfig
from data_pipelines.schema import encode_record
from data_pipelines.synthetic import make_example, to_record
from data_pipelines.synthetic.source import SyntheticSource

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM = 30


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    source = SyntheticSource(seed=2, num=NUM, size=32)
    for shard in range(3):
        path = folder / shard_name("synthetic", "train", shard, 3)
        write_shard(str(path), (source[i] for i in range(shard * 10, shard * 10 + 10)))
    return str(folder)


def _ids(loader):
    return [str(i) for batch in loader for i in batch["id"]]


def test_two_processes_are_disjoint_and_cover_each_epoch(shards):
    config = LoaderConfig(batch_size=6, resolution=32, seed=7, num_epochs=2, drop_remainder=False)
    per_process = [
        _ids(EditLoader(shards, config, process_index=p, process_count=2)) for p in range(2)
    ]
    everything = {f"synthetic-train-s2-{i:08d}" for i in range(NUM)}
    for p in range(2):
        assert len(per_process[p]) == NUM  # 15 per epoch, 2 epochs
    for epoch in range(2):
        a = per_process[0][epoch * 15 : (epoch + 1) * 15]
        b = per_process[1][epoch * 15 : (epoch + 1) * 15]
        assert not set(a) & set(b)
        assert set(a) | set(b) == everything
    assert per_process[0][:15] != per_process[0][15:]  # reshuffled every epoch


def test_shuffle_depends_on_seed_only(shards):
    run = lambda seed: _ids(
        EditLoader(shards, LoaderConfig(batch_size=5, resolution=32, seed=seed))
    )
    assert run(1) == run(1) and run(1) != run(2)
    assert sorted(run(1)) == sorted(f"synthetic-train-s2-{i:08d}" for i in range(NUM))


def _assert_resumes(shards, config, before: int, after: int) -> list[dict]:
    """Takes `before` batches, saves the iterator state through JSON (as a checkpoint does),
    takes `after` more; a loader restored from that state must yield those same `after` batches.
    Returns all `before + after` batches of the uninterrupted loader."""
    with EditLoader(shards, config, process_index=0, process_count=1) as first:
        taken = [next(first) for _ in range(before)]
        state = json.loads(json.dumps(first.get_state()))
        expected = [next(first) for _ in range(after)]
    with EditLoader(shards, config, process_index=0, process_count=1) as restored:
        restored.set_state(state)
        got = [next(restored) for _ in range(after)]
    for want, have in zip(expected, got, strict=True):
        assert set(want) == set(have)
        for key in want:
            np.testing.assert_array_equal(want[key], have[key])
    return taken + expected


@pytest.mark.parametrize("workers", [0, 2])
def test_restored_iterator_yields_the_same_next_batches(shards, workers):
    config = LoaderConfig(
        batch_size=4, resolution=32, seed=3, num_epochs=None, worker_count=workers
    )
    _assert_resumes(shards, config, before=3, after=3)


def test_a_category_weighted_loader_resumes_with_the_same_next_batches(shards):
    """data.category_weights thin records out by random draws; those draws come back with the
    iterator state, so a resumed run sees the batches an uninterrupted one sees."""
    from data_pipelines.schema import CATEGORIES

    weights = {"add": 0.0, "remove": 0.5, "replace": 2.0, "style": 0.3}
    config = LoaderConfig(
        batch_size=3, resolution=32, seed=3, num_epochs=None, category_weights=weights
    )
    batches = _assert_resumes(shards, config, before=4, after=12)  # past the first epoch's end
    seen = np.concatenate([b["category"] for b in batches])
    assert CATEGORIES.index("add") not in seen  # the weights were applied
    assert CATEGORIES.index("replace") in seen


def _id_words(batches) -> list[tuple[str, str]]:
    return [
        (str(i), str(t)) for b in batches for i, t in zip(b["id"], b["instruction"], strict=True)
    ]


def test_a_rephrasing_loader_rewords_reproducibly_and_resumes(shards):
    """data.rephrase: each read gets new words for the same edit, drawn with the record's own
    generator, so a resumed run reads the words an uninterrupted one reads."""
    from data_pipelines.synthetic.phrasings import parse_instruction, rephrase

    def edit(text):  # the category and the slots every phrasing of it names
        category, slots = parse_instruction(text)
        return category, {k: v for k, v in slots.items() if k != "color"}

    config = LoaderConfig(batch_size=5, resolution=32, seed=3, num_epochs=None, rephrase=rephrase)
    batches = _assert_resumes(shards, config, before=4, after=10)  # two epochs and a bit
    as_stored = dataclasses.replace(config, rephrase=None, num_epochs=1)
    stored = dict(_id_words(EditLoader(shards, as_stored)))
    reads = _id_words(batches)
    assert all(edit(t) == edit(stored[i]) for i, t in reads)  # the same edit ...
    assert sum(t != stored[i] for i, t in reads) > len(reads) // 2  # ... mostly in other words
    per_record: dict[str, set[str]] = {}
    for i, t in reads:
        per_record.setdefault(i, set()).add(t)
    assert any(len(words) > 1 for words in per_record.values())  # a new draw on each read


def test_a_rephraser_that_cannot_read_a_record_stops_the_loader(shards):
    def refuse(text, rng):
        raise ValueError("not a phrasing of this world")

    config = LoaderConfig(batch_size=2, resolution=32, seed=0, rephrase=refuse)
    with pytest.raises(ValueError, match="cannot rephrase record 'synthetic-train-s2-.*not a"):
        next(EditLoader(shards, config))


def test_batch_fields_and_global_arrays_on_a_mesh():
    import jax
    from jax.sharding import Mesh

    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    config = LoaderConfig(batch_size=4, resolution=(24, 32), seed=0, random_crop=False)
    batch = next(EditLoader(SyntheticSource(seed=0, num=8, size=32), config, mesh=mesh))
    assert isinstance(batch["source"], jax.Array) and batch["source"].shape == (4, 24, 32, 3)
    assert batch["source"].dtype == np.uint8 and batch["mask"].shape == (4, 24, 32)
    assert batch["has_mask"].dtype == np.bool_ and bool(batch["has_mask"].all())
    assert batch["category"].dtype == np.int32
    assert isinstance(batch["instruction"], np.ndarray) and batch["instruction"].shape == (4,)


def test_tokens_mode(tmp_path):
    records = []
    for i in range(6):
        record = to_record(make_example(0, i, 32))
        tokens = np.full((4, 4), i, np.int16)
        record = dataclasses.replace(record, source_tokens=tokens, target_tokens=tokens + 1)
        records.append(encode_record(record))
    config = LoaderConfig(batch_size=3, seed=0, use_tokens=True, shuffle=False)
    batch = next(EditLoader(records, config, process_index=0, process_count=1))
    assert batch["source_tokens"].dtype == np.int32 and batch["source_tokens"].shape == (3, 4, 4)
    np.testing.assert_array_equal(batch["target_tokens"][:, 0, 0], [1, 2, 3])
    assert "source" not in batch


def test_global_batch_over_fake_devices():
    script = textwrap.dedent(
        """
        import jax, numpy as np
        from jax.sharding import Mesh
        from data_pipelines.loader import EditLoader, LoaderConfig
        from data_pipelines.synthetic.source import SyntheticSource
        mesh = Mesh(np.array(jax.devices()).reshape(2, 2), ("data", "fsdp"))
        loader = EditLoader(SyntheticSource(seed=0, num=16, size=32),
                            LoaderConfig(batch_size=8, resolution=32), mesh=mesh)
        batch = next(loader)
        source = batch["source"]
        assert source.shape == (8, 32, 32, 3), source.shape
        assert len(source.addressable_shards) == 4
        assert {s.data.shape for s in source.addressable_shards} == {(2, 32, 32, 3)}
        print("ok")
        """
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    env["PYTHONPATH"] = REPO
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]


def test_orbax_checkpoint_manager_saves_and_restores_the_iterator(tmp_path):
    import grain
    import orbax.checkpoint as ocp

    source = SyntheticSource(seed=0, num=20, size=32)
    config = LoaderConfig(batch_size=4, resolution=32, seed=1, num_epochs=None)
    handlers = {"data": grain.checkpoint.CheckpointHandler()}
    first = EditLoader(source, config, process_index=0, process_count=1)
    next(first), next(first)
    with ocp.CheckpointManager(str(tmp_path), item_handlers=handlers) as manager:
        save = grain.checkpoint.CheckpointSave(first.grain_iterator)
        manager.save(2, args=ocp.args.Composite(data=save))
        manager.wait_until_finished()
    expected = [next(first)["id"] for _ in range(3)]
    restored = EditLoader(source, config, process_index=0, process_count=1)
    with ocp.CheckpointManager(str(tmp_path), item_handlers=handlers) as manager:
        restore = grain.checkpoint.CheckpointRestore(restored.grain_iterator)
        manager.restore(2, args=ocp.args.Composite(data=restore))
    for want in expected:
        np.testing.assert_array_equal(next(restored)["id"], want)


def test_category_weights_thin_out_the_other_categories_reproducibly(tmp_path):
    # 140 records, 20 per category; "replace" keeps all, "add" none, the rest about half.
    from data_pipelines.schema import CATEGORIES

    source = SyntheticSource(seed=5, num=140, size=32)
    weights = {c: 1.0 for c in CATEGORIES} | {"replace": 2.0, "add": 0.0}
    config = LoaderConfig(
        batch_size=1, resolution=32, seed=4, drop_remainder=False, category_weights=weights
    )
    seen = [int(b["category"][0]) for b in EditLoader(source, config)]
    assert seen == [int(b["category"][0]) for b in EditLoader(source, config)]  # same draws
    counts = np.bincount(seen, minlength=len(CATEGORIES))
    every = np.bincount(
        [
            int(b["category"][0])
            for b in EditLoader(source, dataclasses.replace(config, category_weights=None))
        ],
        minlength=len(CATEGORIES),
    )
    replace, add = CATEGORIES.index("replace"), CATEGORIES.index("add")
    assert counts[replace] == every[replace] > 0 and counts[add] == 0
    others = [i for i in range(len(CATEGORIES)) if i not in (replace, add)]
    assert 0.25 < counts[others].sum() / every[others].sum() < 0.75
    with pytest.raises(ValueError, match="unknown categories \\['recolor'\\]"):
        LoaderConfig(batch_size=1, category_weights={"recolor": 2.0})
    with pytest.raises(ValueError, match="finite, >= 0"):
        LoaderConfig(batch_size=1, category_weights={"add": -1.0})


def test_the_train_config_names_the_rephraser():
    from configs import smoke
    from data_pipelines.synthetic.phrasings import parse_instruction
    from launch.train import make_loader

    config = smoke.get_config()
    config.data.update(dict(source="synthetic", synthetic_num=8, rephrase="synthetic"))
    with make_loader(config) as loader:
        words = [str(t) for t in next(loader)["instruction"]]
    config.data.rephrase = ""
    with make_loader(config) as loader:
        stored = [str(t) for t in next(loader)["instruction"]]
    assert words != stored and all(parse_instruction(t) for t in words)
    config.data.rephrase = "paraphrase"
    with pytest.raises(ValueError, match="data.rephrase is 'paraphrase'; expected '' or"):
        make_loader(config)
