"""launch.edit: jobs with a bad one, token dumps, flag errors, and one run of the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from editmgt_jax.editor import Editor
from launch import edit

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIONS = dict(steps=4, batch_size=2, progress=False)


@pytest.fixture(scope="module")
def bundle_path(smoke_bundle):
    return smoke_bundle  # the session's random configs/smoke.py bundle (conftest.py)


@pytest.fixture(scope="module")
def editor(bundle_path):
    return Editor.from_bundle(bundle_path)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(folder / name)
    mask = np.zeros((20, 15), np.uint8)
    mask[4:12, 3:9] = 255
    Image.fromarray(mask).save(folder / "half_size_mask.png")
    (folder / "notes.png").write_text("not an image")
    return folder


def _run(args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "launch.edit", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_jobs_with_bad_ones_report_them_and_write_the_rest(editor, inputs, tmp_path):
    lines = [
        dict(image="a.png", instruction="make it blue", out="a_out.png", mask="half_size_mask.png"),
        dict(image="notes.png", instruction="make it blue", out="notes_out.png"),
        dict(image="b.jpg", instruction="add a cat", out="b_out.png", seed=5),
        dict(image="a.png", instruction="", out="empty.png"),
        dict(image="b.jpg", instruction="add a cat", out="m.png", mask="no_such_mask.png"),
        dict(image="a.png", instruction="make it blue", out="a.txt"),
    ]
    jobs_file = inputs / "jobs.jsonl"
    text = "\n".join(json.dumps(line) for line in lines) + "\n{not json\n"
    jobs_file.write_text(text)
    jobs, failures = edit.read_jobs(str(jobs_file), str(tmp_path))
    assert len(jobs) == 4 and len(failures) == 3
    assert "line 4" in failures[0]["job"] and "instruction is empty" in failures[0]["error"]
    assert "line 6" in failures[1]["job"] and "unknown image extension" in failures[1]["error"]
    assert "line 7" in failures[2]["job"]

    dump = str(tmp_path / "tokens.npz")
    options = edit.Options(dump_tokens=dump, paste_back=True, hold_threshold=0.5, **OPTIONS)
    summary = edit.run_jobs(editor, jobs, options)
    assert summary["edited"] == 2 and summary["failed"] == 2
    errors = " ".join(f["job"] + f["error"] for f in summary["failures"])
    assert "notes.png" in errors and "not a readable image" in errors
    assert "no_such_mask.png" in errors
    assert any("resized" in w for w in summary["warnings"])
    assert sorted(os.listdir(tmp_path)) == ["a_out.png", "b_out.png", "tokens.npz"]
    source = np.asarray(Image.open(inputs / "a.png"))
    out = np.asarray(Image.open(tmp_path / "a_out.png"))
    assert out.shape == source.shape
    allowed = np.asarray(Image.open(inputs / "half_size_mask.png").resize((30, 40), 0)) >= 128
    np.testing.assert_array_equal(out[~allowed], source[~allowed])
    # ... and inside it, the edit, not the input written back (here 15% of the region: the
    # random model's tokens held or pasted back cover the rest).
    moved = np.abs(out.astype(int) - source.astype(int)).max(-1) > 8
    assert moved[allowed].mean() > 0.03, moved[allowed].mean()

    with np.load(dump) as data:
        assert data["outputs"].tolist() == [
            str(tmp_path / "a_out.png"),
            str(tmp_path / "b_out.png"),
        ]
        assert data["tokens"].shape == data["source_tokens"].shape == (2, 8, 6)
        assert data["scores"].shape == (2, 8, 6) and data["hold_mask"].dtype == bool
        held = data["hold_mask"]
        assert held.any()
        np.testing.assert_array_equal(data["tokens"][held], data["source_tokens"][held])
        # Outside the user mask's token cover nothing changed (and nothing was held).
        frozen = ~data["edit_mask"][0]
        assert frozen.any() and not held[0][frozen].any()
        np.testing.assert_array_equal(data["tokens"][0][frozen], data["source_tokens"][0][frozen])


def test_paste_back_tolerance_reaches_the_editor(editor, inputs, tmp_path):
    jobs = edit.image_jobs(str(inputs / "a.png"), "make it blue", str(tmp_path))
    options = edit.Options(paste_back=True, paste_back_tolerance=255, **OPTIONS)
    assert edit.run_jobs(editor, jobs, options)["edited"] == 1
    # Every decoded pixel is within 255 levels of the source's decoding: all pixels come back.
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "a.png")), np.asarray(Image.open(inputs / "a.png"))
    )


def test_image_folder_and_glob_jobs(inputs, tmp_path):
    jobs = edit.image_jobs(str(inputs / "*.png"), "make it blue", str(tmp_path))
    assert [os.path.basename(j.out) for j in jobs] == ["a.png", "half_size_mask.png", "notes.png"]
    jobs = edit.image_jobs(str(inputs), "make it blue", str(tmp_path))
    assert len(jobs) == 4
    with pytest.raises(ValueError, match="instruction is empty"):
        edit.image_jobs(str(inputs / "a.png"), " ", str(tmp_path / "o.png"))
    with pytest.raises(ValueError, match="is a file name but"):
        edit.image_jobs(str(inputs), "make it blue", str(tmp_path / "o.png"))
    with pytest.raises(ValueError, match=r"must be in \[0, 1\], got -0.1"):
        edit.Options(hold_threshold=-0.1).check()
    with pytest.raises(ValueError, match="--region_source_bias must be finite"):
        edit.Options(region_source_bias=float("inf")).check()


def test_flag_errors_exit_before_loading_a_model(inputs, tmp_path):
    image = str(inputs / "a.png")
    out = str(tmp_path / "o.png")
    bad_lambda = _run(
        ["--image", image, "--instruction", "x", "--out", out, "--hold_threshold=1.2"]
    )
    assert bad_lambda.returncode != 0
    assert "must be in [0, 1], got 1.2" in bad_lambda.stderr
    empty = _run(["--image", image, "--instruction", "", "--out", out])
    assert empty.returncode != 0 and "instruction is empty" in empty.stderr
    if not os.path.isdir(edit.DEFAULT_CHECKPOINT):
        no_model = _run(["--image", image, "--instruction", "x", "--out", out])
        assert no_model.returncode != 0 and "launch.init_checkpoint" in no_model.stderr
    missing = _run(["--image", image, "--instruction", "x", "--out", out, "--checkpoint", out])
    assert missing.returncode != 0 and "does not exist" in missing.stderr


def test_command_line_edits_a_glob_with_heatmaps(bundle_path, inputs, tmp_path):
    result = _run(
        [
            "--image",
            str(inputs / "[ab].*"),
            "--instruction",
            "make it blue",
            "--out",
            str(tmp_path),
            "--checkpoint",
            bundle_path,
            "--steps=4",
            "--batch_size=2",
            "--save_heatmap",
            "--seed=3",
        ]
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["edited"] == 2 and summary["failed"] == 0
    names = sorted(os.listdir(tmp_path))
    assert names == ["a.png", "a_heatmap.png", "a_hold.png", "b.png", "b_heatmap.png", "b_hold.png"]
    for name in names:
        assert Image.open(tmp_path / name).size == (30, 40)
