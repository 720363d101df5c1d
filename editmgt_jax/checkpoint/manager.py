"""Training checkpoints with orbax: the train state, the data iterator's position, the config.

Each step's checkpoint is a folder `<workdir>/checkpoints/<step>/` with items
  state  the TrainState arrays (sharded save/restore: each host writes its shards)
  data   the grain iterator state (JSON)
orbax writes a step atomically (a temporary folder renamed when complete), keeps the newest
`max_to_keep`, and saves asynchronously. The run's config is kept beside them as `config.json`, so a
restart with an incompatible config is refused with the list of fields that differ.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from editmgt_jax import paths

# Config sections that decide parameter shapes and meaning: they must match to resume.
COMPATIBILITY_SECTIONS = ("model", "vq", "text_encoder", "image_size")
# Single fields that fix the train state's structure (the optimizer state's storage, gradient
# accumulation, the LoRA adapters), with the value a config saved before the field existed meant.
COMPATIBILITY_FIELDS = {
    "optim.moments": "float32",
    "optim.accumulation_steps": 1,
    "lora.rank": 0,
}


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: tree}


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """'field: saved -> current' for each differing field of the compatibility sections."""
    diffs = []
    for section in COMPATIBILITY_SECTIONS:
        a, b = _flat(saved.get(section, {}), section), _flat(current.get(section, {}), section)
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                diffs.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
    flat_saved, flat_current = _flat(saved), _flat(current)
    for key, default in COMPATIBILITY_FIELDS.items():
        was, now = flat_saved.get(key, default), flat_current.get(key, default)
        if was != now:
            diffs.append(f"{key}: {was!r} -> {now!r}")
    return diffs


def _jsonable(config: ml_collections.ConfigDict) -> dict[str, Any]:
    return json.loads(config.to_json_best_effort(sort_keys=True))


class TrainCheckpoints:
    """Save/restore of (state, data position) under `<workdir>/checkpoints`."""

    def __init__(
        self, workdir: str, max_to_keep: int = 3, asynchronous: bool = True, read_only=False
    ):
        """`read_only`: restore only, never write or delete (safe beside a running trainer)."""
        self.workdir = paths.abspath(workdir)  # a folder or a URL (orbax writes gs:// itself)
        if paths.is_url(workdir):
            paths.register_gcs()  # before orbax's epath makes its gs:// filesystem
        self.directory = paths.join(self.workdir, "checkpoints")
        self.read_only = read_only
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=asynchronous,
            create=not read_only,
            read_only=read_only,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "data")
        )

    def check_config(self, config: ml_collections.ConfigDict) -> None:
        """Writes config.json on first use; raises if an existing run's config is incompatible."""
        path = paths.join(self.workdir, "config.json")
        current = _jsonable(config)
        if paths.exists(path):
            saved = json.loads(paths.read_text(path))
            diffs = config_differences(saved, current)
            if diffs and self.latest_step() is not None:
                raise ValueError(
                    f"{self.workdir} holds a checkpoint of an incompatible config; differing "
                    "fields:\n  " + "\n  ".join(diffs) + "\nUse a new --workdir."
                )
        if jax.process_index() == 0 and not self.read_only:
            paths.write_atomic(path, json.dumps(current, indent=2, sort_keys=True))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, data_state: dict[str, Any] | None, force=False) -> bool:
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state or {})
        )
        return self._manager.save(step, args=args, force=force)

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """Restores into `abstract_state` (ShapeDtypeStructs carrying the target shardings)."""
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
        )
        restored = self._manager.restore(step, args=args)
        return restored.state, restored.data

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
