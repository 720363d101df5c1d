"""The synthetic edit world: determinism, exact masks, categories, phrasings, the CLI."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from data_pipelines.array_record_io import list_shards, read_all
from data_pipelines.schema import CATEGORIES, decode_record, encode_record
from data_pipelines.synthetic import edits, make_example, to_record, world
from data_pipelines.synthetic.edits import PLANNERS
from data_pipelines.synthetic.generate import target_from_instruction
from data_pipelines.synthetic.phrasings import (
    EXTRA_STYLE_TEMPLATES,
    EXTRA_TEMPLATES,
    FUNCTION_WORDS,
    STYLE_TEMPLATES,
    TEMPLATES,
    WRAPPERS,
    parse_instruction,
    rephrase,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("size", [32, 64])
def test_masks_are_exact_and_all_categories_appear(size):
    seen = set()
    for index in range(35):
        ex = make_example(seed=5, index=index, size=size)
        changed = (ex.source != ex.target).any(axis=-1)
        assert changed.any(), (index, ex.category)
        outside = ex.mask == 0
        # The guarantee: outside the mask, source and target are identical.
        np.testing.assert_array_equal(ex.source[outside], ex.target[outside])
        assert set(np.unique(ex.mask)) <= {0, 255}
        assert ex.source.shape == (size, size, 3) and ex.mask.shape == (size, size)
        if ex.category not in ("style", "background change"):
            assert (ex.mask > 0).mean() < 0.5, (index, ex.category)  # local edits stay local
        seen.add(ex.category)
    assert seen == set(CATEGORIES)


def test_same_seed_same_bytes_and_any_index_alone():
    a = [encode_record(to_record(make_example(11, i, 48))) for i in range(8)]
    b = [encode_record(to_record(make_example(11, i, 48))) for i in reversed(range(8))][::-1]
    assert a == b
    other = [encode_record(to_record(make_example(12, i, 48))) for i in range(8)]
    assert all(x != y for x, y in zip(a, other, strict=True))


def test_heldout_phrasings_are_disjoint_from_train_and_used():
    for table in (TEMPLATES, STYLE_TEMPLATES):
        for key, splits in table.items():
            assert not set(splits["train"]) & set(splits["heldout"]), key
            assert len(splits["heldout"]) >= 1
    heldout = [make_example(0, i, 32, split="heldout") for i in range(14)]
    train = [make_example(0, i, 32, split="train") for i in range(14)]
    assert {e.instruction for e in heldout}.isdisjoint({e.instruction for e in train})


def _words(phrasings) -> set[str]:
    return {w.strip(",") for p in phrasings for w in p.split() if not w.startswith("{")}


def test_extra_training_phrasings_bring_in_no_heldout_word():
    """The rule the extra phrasings and the wrappers follow: no word of a held-out phrasing that
    the training phrasings of the same key lack (function words aside)."""
    tables = [(TEMPLATES, EXTRA_TEMPLATES), (STYLE_TEMPLATES, EXTRA_STYLE_TEMPLATES)]
    for table, extra in tables:
        assert set(extra) == set(table)
        for key, splits in table.items():
            unseen = _words(splits["heldout"]) - _words(splits["train"]) - FUNCTION_WORDS
            brought = _words(extra[key]) | _words(w.replace("{}", "") for w in WRAPPERS)
            assert not brought & unseen, (key, sorted(brought & unseen))
            assert not set(extra[key]) & {*splits["train"], *splits["heldout"]}, key


def test_rephrase_keeps_the_edit_and_its_target():
    rng = np.random.default_rng(0)
    words_seen = set()
    for index in range(42):
        ex = make_example(8, index, 32, split="heldout" if index % 2 else "train")
        if ex.category == "style":
            heldout = STYLE_TEMPLATES[ex.details["style"]]["heldout"]
        else:
            slots = ex.details | {"color": ex.details.get("obj", "").rsplit(" ", 1)[0]}
            heldout = [t.format(**slots) for t in TEMPLATES[ex.category]["heldout"]]
        heldout = {re.sub(r"(^|\s)a ([aeiou])", r"\1an \2", t) for t in heldout}
        heldout |= {w.format(t) for w in WRAPPERS for t in heldout}
        for _ in range(3):
            words = rephrase(ex.instruction, rng)
            words_seen.add(words)
            np.testing.assert_array_equal(target_from_instruction(ex.scene, words), ex.target)
            assert words not in heldout, (ex.instruction, words)
    assert len(words_seen) > 100  # of 126 draws
    first = [rephrase("remove the red circle", np.random.default_rng(3)) for _ in range(2)]
    assert first[0] == first[1]  # the generator decides
    with pytest.raises(ValueError, match="matches 0 readings"):
        rephrase("make the car red", rng)


def test_backgrounds_named_with_an_parse_back():
    # "a olive checkerboard" is written "an olive checkerboard" in an instruction.
    category, slots = parse_instruction("change the background to an olive checkerboard")
    assert (category, slots) == ("background change", {"background": "a olive checkerboard"})
    assert world.background_named(slots["background"]).description == "a olive checkerboard"


def test_instructions_name_the_edited_object():
    for index in range(0, 70, 7):  # category "add" at multiples of 7 ... and the others below
        for offset in range(7):
            ex = make_example(3, index + offset, 32)
            for slot in ("obj", "new_obj", "new_color", "new_kind"):
                if slot in ex.details:
                    assert ex.details[slot] in ex.instruction, (ex.instruction, ex.details)


def _run(*args):
    out = subprocess.run(
        [sys.executable, "-m", "launch.make_synthetic", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_make_synthetic_cli_array_record_is_deterministic(tmp_path):
    args = ["--num", "21", "--size", "32", "--seed", "4", "--records_per_shard", "8"]
    first = _run(*args, "--out", str(tmp_path / "a"))
    second = _run(*args, "--out", str(tmp_path / "b"), "--workers", "2")
    assert first["written"] == 21
    assert first["categories"] == {c: 3 for c in CATEGORIES}
    shards_a, shards_b = list_shards(str(tmp_path / "a")), list_shards(str(tmp_path / "b"))
    assert len(shards_a) == 3
    for x, y in zip(shards_a, shards_b, strict=True):
        assert open(x, "rb").read() == open(y, "rb").read()
    records = [decode_record(d) for d in read_all(shards_a)]
    assert [r.id for r in records] == [f"synthetic-train-s4-{i:08d}" for i in range(21)]
    assert second["written"] == 21
    assert not [p for p in os.listdir(tmp_path / "a") if p.endswith(".tmp")]


@pytest.fixture(scope="module")
def png_world(tmp_path_factory):
    """(folder, summary) of `launch.make_synthetic --format png`: 7 held-out examples, one per
    category, 32 px."""
    folder = tmp_path_factory.mktemp("png_world")
    summary = _run("--num", "7", "--size", "32", "--split", "heldout", "--format", "png",
                   "--out", str(folder))  # fmt: skip
    return folder, summary


def test_make_synthetic_cli_png(png_world):
    tmp_path, summary = png_world
    assert summary["written"] == 7 and sum(summary["categories"].values()) == 7
    rows = [json.loads(line) for line in open(tmp_path / "jobs.jsonl")]
    assert [r["category"] for r in rows] == list(CATEGORIES)
    edit_jobs = [json.loads(line) for line in open(tmp_path / "edit_jobs.jsonl")]
    assert edit_jobs == [
        dict(image=r["source"], instruction=r["instruction"], out=f"{i:05d}_edited.png")
        for i, r in enumerate(rows)
    ]  # no mask: the edit is not told where the ground truth is
    for i, row in enumerate(rows):
        assert row["source"] == f"{i:05d}_source.png" and row["mask"] == f"{i:05d}_mask.png"
        source = np.asarray(Image.open(tmp_path / row["source"]))
        target = np.asarray(Image.open(tmp_path / row["target"]))
        mask = np.asarray(Image.open(tmp_path / row["mask"]))
        ex = make_example(0, i, 32, split="heldout")
        np.testing.assert_array_equal(source, ex.source)
        np.testing.assert_array_equal(mask, ex.mask)
        np.testing.assert_array_equal(source[mask == 0], target[mask == 0])
        assert row["instruction"] == ex.instruction


def _score(world, edits, capsys):
    from benchmarks import score_synthetic_edits

    assert score_synthetic_edits.main(["--world", str(world), "--edits", str(edits)]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_the_independent_scorer_on_a_tiny_world(png_world, tmp_path, capsys):
    """benchmarks/score_synthetic_edits.py (the embedded model's headline figure) on edits
    whose scores are known: the targets, the sources, a part of the way from one to the other,
    changes outside the mask, a missing edit."""
    world, _ = png_world
    rows = [json.loads(line) for line in open(world / "jobs.jsonl")]
    outs = [json.loads(line)["out"] for line in open(world / "edit_jobs.jsonl")]
    read = lambda name, mode="RGB": np.asarray(Image.open(world / name).convert(mode), np.int64)

    def score(make):
        folder = tmp_path / f"edits{len(os.listdir(tmp_path))}"
        folder.mkdir()
        for i, (row, out) in enumerate(zip(rows, outs, strict=True)):
            mask = read(row["mask"], "L") > 0
            edited = make(i, read(row["source"]), read(row["target"]), mask)
            if edited is not None:
                Image.fromarray(edited.astype(np.uint8)).save(folder / out)
        return _score(world, folder, capsys)

    local = [c for c in CATEGORIES if c != "style"]  # style's mask is the whole image
    targets = score(lambda i, s, t, m: t)
    assert targets["overall"] == dict(success=1.0, clean=1.0, psnr_outside=100.0, count=7)
    assert targets["missing"] == [] and sorted(targets["categories"]) == sorted(CATEGORIES)
    assert targets["categories"]["style"]["psnr_outside"] is None
    sources = score(lambda i, s, t, m: s)
    assert sources["overall"]["success"] == 0.0 and sources["overall"]["psnr_outside"] == 100.0
    assert all(sources["categories"][c]["success"] == 0.0 for c in local)
    assert sources["overall"]["clean"] == 0.0
    # Success: at most half the source's distance to the target left inside the mask; clean:
    # at most a quarter (and outside kept).
    for fraction, success, clean in ((0.8, 1.0, 1.0), (0.7, 1.0, 0.0), (0.4, 0.0, 0.0)):
        partway = score(lambda i, s, t, m, f=fraction: np.rint(s + f * (t - s)))
        assert partway["overall"]["success"] == success, fraction
        assert partway["overall"]["clean"] == clean, fraction

    # The target with every pixel outside the mask 10 levels off in one channel:
    # MSE 100 / 3, PSNR 10 log10(255^2 * 3 / 100).
    def off_outside(i, s, t, m):
        edited = t.copy()
        edited[..., 0] += np.where(~m, np.where(t[..., 0] <= 245, 10, -10), 0)
        return edited

    shifted = score(off_outside)
    expected = 10 * np.log10(255.0**2 * 3 / 100)
    for c in local:
        assert shifted["categories"][c]["psnr_outside"] == pytest.approx(expected, abs=1e-6), c
        assert shifted["categories"][c]["success"] == 1.0
        assert shifted["categories"][c]["clean"] == 1.0  # 32.9 dB outside: still clean

    # 40 levels off outside (PSNR 20.9 dB): the region is right but the edit is not clean.
    def far_outside(i, s, t, m):
        edited = t.copy()
        edited[..., 0] += np.where(~m, np.where(t[..., 0] <= 215, 40, -40), 0)
        return edited

    far = score(far_outside)
    for c in local:
        assert far["categories"][c]["success"] == 1.0 and far["categories"][c]["clean"] == 0.0, c
    assert far["categories"]["style"]["clean"] == 1.0  # nothing outside: judged inside only
    # A missing edit is a failure and is listed.
    first = rows[0]["category"]
    gone = score(lambda i, s, t, m: None if i == 0 else t)
    assert gone["missing"] == [outs[0]] and gone["categories"][first]["success"] == 0.0
    assert gone["overall"]["success"] == pytest.approx(6 / 7)
    # Nothing to do inside the mask (target = source there) is no success either.
    from benchmarks.score_synthetic_edits import score_one

    source = read(rows[0]["source"])
    nothing = score_one(source, source, source, read(rows[0]["mask"], "L") > 0)
    assert nothing == (False, False, 100.0)


def test_target_is_a_function_of_source_and_instruction():
    """The world's guarantee: the instruction's words, applied to the source scene with no random
    draw at all, give the example's target byte for byte (both splits, every category)."""
    for split in ("train", "heldout"):
        for index in range(42):
            ex = make_example(17, index, 64, split)
            again = target_from_instruction(ex.scene, ex.instruction)
            assert again.tobytes() == ex.target.tobytes(), (split, ex.category, ex.instruction)


@pytest.mark.parametrize("category", [c for c in CATEGORIES if c != "style"])
def test_same_instruction_under_other_random_states_gives_the_same_target(category):
    """Plans drawn for one scene from many generator states: all those whose instruction slots
    agree render the same target bytes, whatever else the generators drew."""
    scene = make_example(23, CATEGORIES.index(category), 64).scene
    targets: dict = {}
    for state in range(120):
        rng = np.random.default_rng(state)
        rng.random(state % 7)  # other draws before the plan
        plan = PLANNERS[category](rng, scene)
        if plan is None:
            continue
        key = tuple(sorted(plan.slots.items()))
        targets.setdefault(key, set()).add(world.render(plan.target)[0].tobytes())
    repeated = [images for images in targets.values()]
    assert repeated and all(len(images) == 1 for images in repeated), category
    assert sum(1 for _ in targets) >= 2  # the draws did vary the edit


def test_instructions_parse_back_to_their_slots():
    for index in range(70):
        ex = make_example(29, index, 64, "heldout" if index % 2 else "train")
        category, slots = parse_instruction(ex.instruction)
        assert category == ex.category
        if category == "style":
            assert slots == {"style": ex.details["style"]}
        else:
            assert slots == {k: v for k, v in ex.details.items() if k in slots}
    with pytest.raises(ValueError, match="0 readings"):
        parse_instruction("make the moon purple")


def test_scenes_have_two_objects_upright_shapes_and_named_backgrounds():
    for index in range(70):
        ex = make_example(31, index, 64)
        assert 2 <= len(ex.scene.shapes) <= world.MAX_SHAPES
        assert world.background_named(ex.scene.background.description) == ex.scene.background
        if ex.category == "add":
            new = parse_instruction(ex.instruction)[1]
            cx, cy = edits.place_center(new["where"], 64)
            target_scene = edits.apply_edit(ex.scene, "add", new)
            added = target_scene.shapes[-1]
            assert (added.cx, added.cy, added.radius) == (cx, cy, edits.ADD_RADIUS_FRACTION * 64)
        if ex.category == "motion change":
            moved = edits.apply_edit(ex.scene, ex.category, parse_instruction(ex.instruction)[1])
            shifts = {
                (b.cx - a.cx, b.cy - a.cy)
                for a, b in zip(ex.scene.shapes, moved.shapes, strict=True)
                if (a.cx, a.cy) != (b.cx, b.cy)
            }
            assert len(shifts) == 1 and sorted(map(abs, shifts.pop())) == pytest.approx([0.0, 16.0])
    with pytest.raises(ValueError, match="needs an orientation"):
        world.Background("stripes", "navy")
    with pytest.raises(ValueError, match="no background is described"):
        world.background_named("polka navy")


def test_patterns_are_aligned_with_4px_cells_at_64px():
    """Stripes and checks change colour only on cell borders, so their cells are flat."""
    for pattern, orientation in (
        ("stripes", "horizontal"),
        ("stripes", "vertical"),
        ("checker", ""),
    ):
        image = world.render_background(world.Background(pattern, "navy", orientation), 64)
        cells = image.reshape(16, 4, 16, 4, 3)
        assert (cells == cells[:, :1, :, :1]).all(), pattern
