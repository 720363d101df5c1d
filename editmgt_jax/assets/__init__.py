"""Files that ship inside the package: the embedded default model (`DEFAULT_MODEL`, a bundle
folder trained by configs/default.py on the synthetic edit world; see its bundle.json metadata)."""

from __future__ import annotations

import os

DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_model")
