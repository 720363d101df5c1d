"""Readers of the benchmarks' released layouts, on miniature copies the tests write."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from editmgt_jax.evaluation import benchmark_metrics as bm
from editmgt_jax.evaluation.benchmarks import emu_edit, gedit, magicbrush, pie_bench
from editmgt_jax.evaluation.benchmarks.records import LayoutError
from tests import benchmark_layouts as layouts


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("layouts")
    made = {}
    for name in ("magicbrush", "emu_edit", "pie_bench", "gedit"):
        root = str(base / name)
        made[name] = (root, getattr(layouts, name)(root))
    return made


def test_magicbrush_reader(roots):
    root, truth = roots["magicbrush"]
    reader = magicbrush.MagicBrushReader(root)
    examples = {e.key: e for e in reader}
    assert sorted(examples) == sorted(truth)  # <img_id>_<turn_index>
    assert reader.skipped == {"undecodable_image": 1}
    for key, (source, target, mask) in truth.items():
        e = examples[key]
        np.testing.assert_array_equal(e.source, source)
        np.testing.assert_array_equal(e.target, target)
        np.testing.assert_array_equal(e.mask, mask)
        assert e.category == f"turn_{e.meta['turn_index']}"
        assert e.texts["caption"] == f"a square of colour {e.meta['turn_index']}"
    assert reader.session_turns() == {"100": [1, 2], "101": [1, 2], "102": [1], "999": [1]}
    second = magicbrush.MagicBrushReader(root, sessions=["100", "102"], turns=[2])
    assert [e.key for e in second] == ["100_2"]
    no_captions = magicbrush.MagicBrushReader(os.path.join(root, "data"))
    assert no_captions.captions_path is None and "caption" not in next(iter(no_captions)).texts
    assert "local_descriptions.json" in magicbrush.captions_note(no_captions)


def test_a_layout_without_the_columns_is_named(tmp_path):
    path = str(tmp_path / "x.parquet")
    pq.write_table(pa.table({"img_id": ["1"], "instruction": ["a"]}), path)
    with pytest.raises(LayoutError, match=r"lacks columns \['turn_index', 'source_img'"):
        magicbrush.MagicBrushReader(path)
    os.makedirs(tmp_path / "empty")
    with pytest.raises(LayoutError, match="no \\*.parquet files"):
        emu_edit.EmuEditReader(str(tmp_path / "empty"))
    with pytest.raises(LayoutError, match="neither a folder nor a .parquet file"):
        gedit.GEditReader(str(tmp_path / "absent"))


def test_emu_edit_reader(roots):
    root, truth = roots["emu_edit"]
    reader = emu_edit.EmuEditReader(root)
    examples = list(reader)
    assert [e.key for e in examples] == ["validation_0", "validation_1", "test_0", "test_1"]
    assert reader.skipped == {"empty_instruction": 1} and reader.total == 5
    for e in examples:
        np.testing.assert_array_equal(e.source, truth[e.key])
        assert e.target is None and e.mask is None
        assert e.texts == {"input_caption": "a square", "output_caption": "a blue square"}
    assert {e.category for e in examples} == {"color", "background"}
    assert [e.key for e in emu_edit.EmuEditReader(root, split="test")] == ["test_0", "test_1"]


def test_pie_bench_reader(roots):
    root, truth = roots["pie_bench"]
    reader = pie_bench.PIEBenchReader(root)
    examples = list(reader)
    assert [e.key for e in examples] == sorted(truth)
    assert reader.skipped == {"missing_image": 1}
    border = bm.decode_pie_mask([]) > 0
    for e in examples:
        source, mask = truth[e.key]
        np.testing.assert_array_equal(e.source, source)
        np.testing.assert_array_equal(e.mask, mask | border)  # decoded with the border
        assert e.texts == {"original_prompt": "a red square", "editing_prompt": "a blue square"}
    assert [e.category for e in examples] == ["random"] + ["change attribute color"] * 2
    assert len(list(pie_bench.PIEBenchReader(root, types=["6"]))) == 2


def test_pie_bench_bad_annotations_are_counted(tmp_path):
    root = str(tmp_path / "pie")
    layouts.pie_bench(root, size=512)
    path = os.path.join(root, "mapping_file.json")
    with open(path) as f:
        mapping = json.load(f)
    mapping["000000000001"]["editing_type_id"] = "12"
    del mapping["000000000002"]["mask"]
    with open(path, "w") as f:
        json.dump(mapping, f)
    reader = pie_bench.PIEBenchReader(root)
    assert [e.key for e in reader] == ["000000000000"]
    assert reader.skipped == {"missing_image": 1, "unknown_editing_type": 1, "missing_field": 1}
    with pytest.raises(LayoutError, match="mapping_file.json"):
        pie_bench.PIEBenchReader(str(tmp_path))


def test_gedit_reader_and_judge_layout(roots):
    root, truth = roots["gedit"]
    reader = gedit.GEditReader(root)
    examples = list(reader)
    assert [e.key for e in examples] == ["k000", "k001", "k003"]
    assert reader.skipped == {"missing_image": 1}
    for e in examples:
        np.testing.assert_array_equal(e.source, truth[("en", e.key)])
    assert gedit.judge_path("/o", "m", examples[0]) == "/o/gedit/m/fullset/color_alter/en/k000.png"
    assert [e.key for e in gedit.GEditReader(root, language="cn")] == ["k002"]
    assert len(list(gedit.GEditReader(root, language="all"))) == 4
