"""The checkpoint bundle: everything an edit needs, in one folder.

    bundle.json              format, version, configs (transformer, VQ, text encoder), pipeline
                             defaults, and metadata (how it was made: random init or training run)
    transformer.safetensors  our transformer params, '/'-joined paths, unscanned layout
    vq.safetensors           our VQ params, '/'-joined paths
    text_encoder.safetensors optional: text encoder params when they do not ship in a package

Portable (safetensors + JSON, no pickles), written atomically (a folder is renamed into place only
when complete), and small enough to ship in the repository for the embedded default model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Any

import jax
import numpy as np
from safetensors.numpy import load_file

from editmgt_jax import paths
from editmgt_jax.atomic import make_temp_dir
from editmgt_jax.atomic import save_safetensors as save_file  # umask mode, not 0600
from editmgt_jax.checkpoint.convert.scan_layout import scan_params, unscan_params
from editmgt_jax.checkpoint.convert.table import flatten, unflatten
from editmgt_jax.models.transformer_config import TransformerConfig

FORMAT = "editmgt-jax-bundle"
VERSION = 1
MANIFEST = "bundle.json"
TRANSFORMER_FILE = "transformer.safetensors"
VQ_FILE = "vq.safetensors"
TEXT_FILE = "text_encoder.safetensors"

# Pipeline defaults every bundle carries (a bundle may override any of them).
DEFAULT_PIPELINE = dict(
    resolution=1024,  # longest side in pixels before snapping to the token stride
    steps=16,
    guidance=6.0,
    reference_strength=1.1,
    capture_blocks=[30],
    hold_threshold=0.0,
    schedule="cosine",
    smoothing="adaptive",
    temperature=[2.0, 0.0],
    score_rescale="minmax",  # region scores to [0, 1] before lambda: minmax (official) | max
    sample_temperature=1.0,  # softmax temperature of the token samples (0: most likely code)
    source_logit_bias=0.0,  # margin added to the source token's logit (DecodeConfig)
    region_source_bias=0.0,  # ... and this times (1 - region score)
    aesthetic_score=6.0,
    paste_back=False,  # source pixels back on held / unchanged tokens (see Editor.run)
    paste_back_tolerance=0.0,  # ... and where the edited pixel is this close to the original's
)


@dataclasses.dataclass
class Bundle:
    """A loaded bundle. Params are numpy trees (device placement is the caller's choice)."""

    transformer_config: TransformerConfig
    transformer_params: dict[str, Any]
    vq_config: dict[str, Any]  # diffusers-style VQModel config
    vq_params: dict[str, Any]
    text_encoder: dict[str, Any]  # {"kind": "minilm"} or {"kind": "clip_gemma2", ...}
    pipeline: dict[str, Any]
    metadata: dict[str, Any]
    text_params: dict[str, Any] | None = None
    path: str | None = None


def _host_flat(params: dict[str, Any]) -> dict[str, np.ndarray]:
    params = jax.device_get(params)
    return {k: np.ascontiguousarray(np.asarray(v)) for k, v in flatten(params).items()}


def save_bundle(path: str, bundle: Bundle, overwrite: bool = False) -> str:
    """Writes `bundle` to the folder `path` atomically; returns `path`. A URL (gs://...) is
    written in a local temp folder, then uploaded with bundle.json last (`paths.publish_folder`)."""
    path = paths.abspath(path)
    if paths.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    unknown = sorted(set(bundle.pipeline) - set(DEFAULT_PIPELINE))
    if unknown:
        raise ValueError(f"Unknown pipeline field(s) {unknown}; known: {sorted(DEFAULT_PIPELINE)}")
    cfg = bundle.transformer_config
    transformer = bundle.transformer_params
    if cfg.scan_layers:
        transformer = unscan_params(jax.device_get(transformer))
    manifest = dict(
        format=FORMAT,
        version=VERSION,
        transformer=dataclasses.asdict(cfg.replace(scan_layers=False)),
        vq=bundle.vq_config,
        text_encoder=bundle.text_encoder,
        pipeline={**DEFAULT_PIPELINE, **bundle.pipeline},
        metadata=bundle.metadata,
    )
    remote = paths.is_url(path)
    parent = tempfile.gettempdir() if remote else os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = make_temp_dir(parent, prefix=f".{paths.basename(path)}.")
    try:
        save_file(_host_flat(transformer), os.path.join(tmp, TRANSFORMER_FILE))
        save_file(_host_flat(bundle.vq_params), os.path.join(tmp, VQ_FILE))
        if bundle.text_params is not None:
            save_file(_host_flat(bundle.text_params), os.path.join(tmp, TEXT_FILE))
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
        if remote:
            paths.publish_folder(tmp, path, last=MANIFEST)
        elif os.path.exists(path):
            old = path + ".old"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    return path


def read_manifest(path: str) -> dict[str, Any]:
    """bundle.json of the bundle at `path` (a folder or a URL), validated."""
    manifest_path = paths.join(path, MANIFEST)
    if not paths.isdir(path):
        raise FileNotFoundError(f"Checkpoint bundle {path!r} does not exist")
    if not paths.isfile(manifest_path):
        raise FileNotFoundError(
            f"{path!r} is not a checkpoint bundle (no {MANIFEST}); official PyTorch folders "
            "are converted with `python -m launch.convert --from_torch DIR --out CKPT`"
        )
    with paths.open_file(manifest_path) as f:
        try:
            manifest = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{manifest_path} is not valid JSON: {e}") from e
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{manifest_path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("version", 0) > VERSION:
        raise ValueError(
            f"{manifest_path}: bundle version {manifest['version']} is newer than this code "
            f"reads ({VERSION}); upgrade editmgt-jax"
        )
    for key in ("transformer", "vq", "text_encoder", "pipeline"):
        if key not in manifest:
            raise ValueError(f"{manifest_path} lacks the {key!r} section")
    return manifest


def update_metadata(path: str, **fields: Any) -> dict[str, Any]:
    """Sets `fields` in the metadata of the bundle at `path` (bundle.json rewritten atomically;
    weights untouched); returns the new metadata. Values must be JSON-serializable."""
    manifest = read_manifest(path)
    manifest.setdefault("metadata", {}).update(fields)
    text = json.dumps(manifest, indent=2)  # fails before anything is written
    paths.write_atomic(paths.join(path, MANIFEST), text)
    return manifest["metadata"]


def update_pipeline(path: str, **fields: Any) -> dict[str, Any]:
    """Sets pipeline defaults (e.g. the sampler settings chosen on a tuning split) of the bundle at
    `path` (bundle.json rewritten atomically; weights untouched); returns the new pipeline.
    Unknown field names raise ValueError naming them."""
    unknown = sorted(set(fields) - set(DEFAULT_PIPELINE))
    if unknown:
        raise ValueError(f"Unknown pipeline field(s) {unknown}; known: {sorted(DEFAULT_PIPELINE)}")
    manifest = read_manifest(path)
    manifest["pipeline"] = {**DEFAULT_PIPELINE, **manifest["pipeline"], **fields}
    text = json.dumps(manifest, indent=2)
    paths.write_atomic(paths.join(path, MANIFEST), text)
    return manifest["pipeline"]


def _load_params(path: str, name: str, required: bool = True) -> dict[str, Any] | None:
    file = os.path.join(path, name)
    if not os.path.isfile(file):
        if required:
            raise FileNotFoundError(f"Checkpoint bundle {path!r} lacks {name}")
        return None
    try:
        return unflatten(load_file(file))
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(f"Cannot read {file}: {e}") from e


def is_bundle(path: str) -> bool:
    """True when `path` is a bundle folder or URL (it holds bundle.json)."""
    return bool(path) and paths.isfile(paths.join(path, MANIFEST))


_PART_FILES = {"transformer": TRANSFORMER_FILE, "vq": VQ_FILE, "text_encoder": TEXT_FILE}


def load_bundle_part(path: str, part: str) -> dict[str, Any] | None:
    """One part's params ("transformer", "vq" or "text_encoder"; None when the bundle has no
    text_encoder.safetensors) without reading the others: training takes the VQ and the text
    encoder of a 1B bundle without holding its transformer twice."""
    if part not in _PART_FILES:
        raise ValueError(f"part={part!r}; expected one of {sorted(_PART_FILES)}")
    read_manifest(path)
    path = paths.local_copy(path)
    return _load_params(path, _PART_FILES[part], required=part != "text_encoder")


def load_bundle(path: str, **transformer_overrides: Any) -> Bundle:
    """Reads a bundle folder (a URL: its cached local copy, `paths.local_copy`).
    `transformer_overrides` set execution fields (e.g. dtype)."""
    manifest = read_manifest(path)
    path = paths.local_copy(path)
    fields = {**manifest["transformer"], **transformer_overrides}
    cfg = TransformerConfig.from_dict(fields)
    params = _load_params(path, TRANSFORMER_FILE)
    if cfg.scan_layers:
        params = scan_params(params)
    return Bundle(
        transformer_config=cfg,
        transformer_params=params,
        vq_config=manifest["vq"],
        vq_params=_load_params(path, VQ_FILE),
        text_encoder=manifest["text_encoder"],
        pipeline={**DEFAULT_PIPELINE, **manifest["pipeline"]},
        metadata=manifest.get("metadata", {}),
        text_params=_load_params(path, TEXT_FILE, required=False),
        path=os.path.abspath(path),
    )
