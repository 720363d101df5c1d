"""Reading and writing official-layout folders (`config.json` + `*.safetensors`) with numpy only."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
from safetensors.numpy import load_file

from editmgt_jax.atomic import atomic_path
from editmgt_jax.atomic import save_safetensors as save_file  # umask mode, not 0600


def read_config(folder: str, name: str = "config.json") -> dict:
    """Loads `folder/name`, with an error that names the folder when it is absent or broken."""
    path = os.path.join(folder, name)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Checkpoint folder {folder!r} does not exist")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder!r} has no {name}; expected an official-layout folder")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e


def read_state_dict(folder: str, pattern: str = "*.safetensors") -> dict[str, np.ndarray]:
    """Merges every `pattern` file in `folder` (sharded checkpoints included) into one dict."""
    files = sorted(glob.glob(os.path.join(folder, pattern)))
    if not files:
        raise FileNotFoundError(f"{folder!r} has no weights matching {pattern!r}")
    state: dict[str, np.ndarray] = {}
    for file in files:
        try:
            part = load_file(file)
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"Cannot read weights from {file}: {e}") from e
        overlap = state.keys() & part.keys()
        if overlap:
            raise ValueError(f"{file} repeats keys already read: {sorted(overlap)[:5]}")
        state.update(part)
    return state


def write_folder(
    folder: str, config: dict, state_dict: dict[str, np.ndarray], weights_name: str
) -> None:
    """Writes `config.json` and one safetensors file, each atomically."""
    os.makedirs(folder, exist_ok=True)
    with atomic_path(os.path.join(folder, "config.json")) as tmp, open(tmp, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    tensors = {k: np.ascontiguousarray(v) for k, v in state_dict.items()}
    with atomic_path(os.path.join(folder, weights_name)) as tmp:
        save_file(tensors, tmp)
