"""The README's shell commands: each one runs as written, or its placeholders are defined.

Every command in README.md's ```bash blocks is either
- runnable as written: it runs here, from a folder laid out like the checkout, and exits 0;
- the install or the test command (`.ci/run` runs those two itself, verbatim);
- a long-running server (`launch.serve`, tested by tests/test_serve_api.py and the browser test);
- the first edit command (run verbatim, with checks on the edited pixels, by
  tests/test_default_model.py `test_readme_first_edit_command_runs_as_written`);
- or it holds placeholders: words in capitals (CKPT, WORKDIR, ...) that the README's prose
  defines (each appears in backquotes outside the code blocks).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLACEHOLDER = re.compile(r"\b[A-Z][A-Z_]{2,}\b")
NOT_PLACEHOLDERS = {"JSON", "PNG", "DOCKER"}  # capitals that are values, not placeholders
SERVERS = ("python -m launch.serve",)


def readme() -> str:
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        return f.read()


def commands(text: str) -> list[str]:
    """Each command of the ```bash blocks, continuation lines joined, comments dropped."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for command in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"\s+#.*$", "", command).strip()
            if command and not command.startswith("#"):
                found.append(command)
    return found


def marked(text: str, marker: str) -> str:
    return text.split(f"<!-- {marker} -->", 1)[1].split("```bash\n", 1)[1].splitlines()[0]


def placeholders(command: str) -> set[str]:
    return set(PLACEHOLDER.findall(command)) - NOT_PLACEHOLDERS


def classify(text: str) -> dict[str, list[str]]:
    from tests.test_default_model import _readme_first_edit_command

    ci = {marked(text, "install-command"), marked(text, "test-command")}
    kinds: dict[str, list[str]] = {"ci": [], "server": [], "placeholders": [], "runnable": []}
    kinds["first_edit"] = []
    for command in commands(text):
        if command in ci:
            kinds["ci"].append(command)
        elif command == _readme_first_edit_command():
            kinds["first_edit"].append(command)
        elif command.startswith(SERVERS):
            kinds["server"].append(command)
        elif placeholders(command):
            kinds["placeholders"].append(command)
        else:
            kinds["runnable"].append(command)
    return kinds


def test_every_placeholder_is_defined_in_the_prose():
    text = readme()
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    kinds = classify(text)
    assert len(kinds["ci"]) == 2 and len(kinds["first_edit"]) == 1 and kinds["runnable"], kinds
    for command in kinds["placeholders"]:
        for word in placeholders(command):
            assert f"`{word}`" in prose, f"{word} (in {command!r}) is not defined in the README"
    assert "OWNER" not in text


@pytest.mark.parametrize("command", classify(readme())["runnable"])
def test_runnable_command_runs_as_written(command, tmp_path):
    """From a folder with the checkout's examples/ and configs/ (the code on PYTHONPATH);
    /tmp paths land in this test's own folder."""
    for name in ("examples", "configs"):
        os.symlink(os.path.join(REPO, name), tmp_path / name)
    argv = shlex.split(command.replace("/tmp/", f"{tmp_path}/"))
    assert argv[0] == "python", command
    proc = subprocess.run(
        [sys.executable, *argv[1:]],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    outputs = [a for a in argv if a.endswith(".png") or a.endswith("/")]
    for out in outputs:
        assert os.path.exists(tmp_path / out), out
    if argv[1:3] == ["-m", "launch.edit"]:
        pairs = edit_pairs(argv, tmp_path)
        assert pairs, command
        unchanged = [out for image, out in pairs if not _changed(image, out)]
        # Most outputs are edits of their inputs, not the inputs written back.
        assert len(unchanged) <= len(pairs) // 3, unchanged


def edit_pairs(argv: list[str], cwd) -> list[tuple[str, str]]:
    """(input image, output image) of each edit a launch.edit command line makes."""
    value = lambda flag: argv[argv.index(flag) + 1] if flag in argv else None
    if value("--image"):
        return [(os.path.join(cwd, value("--image")), os.path.join(cwd, value("--out")))]
    jobs = os.path.join(cwd, value("--jobs"))
    with open(jobs) as f:
        records = [json.loads(line) for line in f if line.strip()]
    out_dir = os.path.join(cwd, value("--out")) if value("--out") else os.path.dirname(jobs)
    base = os.path.dirname(jobs)
    return [(os.path.join(base, r["image"]), os.path.join(out_dir, r["out"])) for r in records]


def _changed(image: str, out: str, fraction: float = 0.01) -> bool:
    """Whether at least `fraction` of the pixels moved by more than 8 levels in some channel."""
    a = np.asarray(Image.open(image).convert("RGB"), np.int64)
    b = np.asarray(Image.open(out).convert("RGB"), np.int64)
    return a.shape != b.shape or (np.abs(a - b).max(-1) > 8).mean() >= fraction


@pytest.mark.parametrize(
    "page", sorted(p for p in os.listdir(os.path.join(REPO, "docs")) if p.endswith(".md"))
)
def test_every_placeholder_of_a_docs_page_is_defined_on_it(page):
    """docs/*.md: capitals in a command are placeholders its prose defines (or `$VARIABLES`)."""
    with open(os.path.join(REPO, "docs", page), encoding="utf-8") as f:
        text = f.read()
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for command in commands(text):
        command = re.sub(r"\$\w+", "", command)  # environment variables
        for word in placeholders(command):
            assert f"`{word}`" in prose, f"docs/{page}: {word} (in {command!r}) is not defined"
