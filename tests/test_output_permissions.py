"""Outputs get the permissions the user's umask gives (0666 / 0777 masked), not tempfile's private
0600 / 0700: an edit from launch.edit, a saved bundle, a converted folder's safetensors, an
atomic_path file, an ArrayRecord shard."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from data_pipelines.array_record_io import write_shard
from editmgt_jax.assets import DEFAULT_MODEL
from editmgt_jax.atomic import atomic_path, current_umask, make_temp_dir, make_temp_file
from editmgt_jax.checkpoint.bundle import load_bundle, save_bundle
from editmgt_jax.checkpoint.convert.safetensors_io import write_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UMASKS = (0o022, 0o077)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _modes(root) -> dict[str, int]:
    """Mode of `root` and of everything under it, by path relative to `root`'s parent."""
    base = os.path.dirname(root)
    modes = {os.path.relpath(root, base): _mode(root)}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            modes[os.path.relpath(path, base)] = _mode(path)
    return modes


def _expected(root, umask: int) -> dict[str, int]:
    base = os.path.dirname(root)
    return {
        rel: (0o777 if os.path.isdir(os.path.join(base, rel)) else 0o666) & ~umask
        for rel in _modes(root)
    }


@contextlib.contextmanager
def _umask(value: int):
    # os.umask is process-wide: set it for the test only and always put the old one back.
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture(scope="module")
def default_bundle():
    return load_bundle(DEFAULT_MODEL)


@pytest.mark.parametrize("umask", UMASKS, ids=lambda m: f"umask{m:03o}")
def test_library_writers_follow_the_umask(umask, default_bundle, tmp_path):
    with _umask(umask):
        assert current_umask() == umask
        with atomic_path(tmp_path / "atomic" / "out.txt") as tmp:
            with open(tmp, "w") as f:
                f.write("done")
        write_shard(str(tmp_path / "shards" / "x.array_record-00000-of-00001"), [b"a", b"b"])
        save_bundle(str(tmp_path / "bundles" / "b"), default_bundle)
        save_bundle(str(tmp_path / "bundles" / "b"), default_bundle, overwrite=True)
        weights = {"w": np.zeros((2, 3), np.float32)}
        write_folder(str(tmp_path / "converted"), {"a": 1}, weights, "model.safetensors")
        loose_file = make_temp_file(str(tmp_path))
        loose_dir = make_temp_dir(str(tmp_path))
    assert _mode(loose_file) == 0o666 & ~umask and _mode(loose_dir) == 0o777 & ~umask
    for name in ("atomic", "shards", "bundles", "converted"):
        root = str(tmp_path / name)
        assert _modes(root) == _expected(root, umask), name
    assert sorted(os.listdir(tmp_path / "bundles")) == ["b"]  # no staging folder left behind
    assert sorted(os.listdir(tmp_path / "atomic")) == ["out.txt"]


def test_launch_edit_output_is_0644_under_umask_022(tmp_path):
    """The command line a user runs (the embedded default model, one shipped example), in a
    process started with umask 022: its new folder is 0755, the edit and heatmaps 0644."""
    out = tmp_path / "edited" / "out.png"
    args = ["--image", "examples/color.png", "--instruction", "the red cross should be green"]
    args += ["--out", str(out), "--steps", "2", "--save_heatmap"]
    result = subprocess.run(
        [sys.executable, "-m", "launch.edit", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        umask=0o022,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    root = str(tmp_path / "edited")
    assert "out.png" in os.listdir(root) and len(os.listdir(root)) >= 2, os.listdir(root)
    assert _modes(root) == _expected(root, 0o022)
