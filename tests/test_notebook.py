"""The demo notebook's code cells run on a CPU (shell lines such as `!pip install` are skipped)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from editmgt_jax.assets import DEFAULT_MODEL

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "notebooks", "editmgt_demo.ipynb")


def notebook_script(path: str) -> str:
    """The code cells joined into one script, without IPython shell/magic lines."""
    with open(path) as f:
        cells = json.load(f)["cells"]
    lines = []
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        for line in "".join(cell["source"]).splitlines():
            lines.append("" if line.lstrip().startswith(("!", "%")) else line)
        lines.append("")
    return "\n".join(lines)


def test_notebook_code_cells_run(tmp_path):
    from tests.released_layout import released_folder

    assert os.path.isdir(DEFAULT_MODEL), "the embedded default model is missing"
    script = tmp_path / "notebook.py"
    script.write_text(notebook_script(NOTEBOOK))
    official = released_folder(tmp_path / "official")
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OFFICIAL_FOLDER": str(official)}
    run = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "of tokens changed" in run.stdout
    assert "double +" in run.stdout  # the converted official checkpoint ran
