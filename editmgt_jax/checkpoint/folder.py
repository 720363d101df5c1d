"""Released EditMGT folders <-> checkpoint bundles (`launch.convert`, `launch.export --to_torch`).

A released folder (the layout the official pipeline loads):

    editmgt/ or transformer/  config.json + diffusion_pytorch_model.safetensors  (the MGT)
    vqvae/                    config.json + diffusion_pytorch_model.safetensors  (VQModel)
    text_encoder/             config.json + model.safetensors  (CLIPTextModelWithProjection)
    llm_encoder/              config.json + model.safetensors  (Gemma2ForCausalLM)
    tokenizer/                optional CLIP tokenizer (else open_clip's bundled vocabulary)
    llm_tokenizer/, ...       optional Gemma tokenizer (first of `GEMMA_TOKENIZER_DIRS`)
    model_index.json, scheduler/   optional; carried along and written back on export

`convert_folder` reads every part with the existing loaders (one conversion table per part,
`editmgt_jax.checkpoint.convert`) and `save_converted` writes one bundle (see bundle.py):

    bundle.json, transformer.safetensors, vq.safetensors
    text_encoder.safetensors  CLIP params under `clip/`, Gemma 2 params under `gemma/`
    tokenizers/clip/, tokenizers/gemma/   the tokenizer files of the folder, when it has them
    official/                 model_index.json and scheduler/ of the folder, when present

The bundle's metadata records, per part, the source subfolder, its original config.json, the
dtype of every source tensor and the keys our loaders drop because they carry no weights (CLIP's
`position_ids` buffer, Gemma's tied `lm_head.weight`). `export_to_torch` uses that record to write
every tensor back with its original key, dtype and values: convert -> export is bit-exact when the
bundle was stored in float32 (or in the folder's own dtype).

Example:
    >>> converted = convert_folder("/path/to/EditMGT", dtype="bfloat16")  # doctest: +SKIP
    >>> save_converted(converted, "/ckpt/editmgt_bf16")  # doctest: +SKIP
    >>> export_to_torch("/ckpt/editmgt_bf16", "/tmp/EditMGT_again")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from editmgt_jax import paths
from editmgt_jax.atomic import make_temp_dir
from editmgt_jax.atomic import replace_folder as _replace_local_folder
from editmgt_jax.checkpoint.bundle import (
    DEFAULT_PIPELINE,
    MANIFEST,
    Bundle,
    load_bundle,
    save_bundle,
)
from editmgt_jax.checkpoint.convert import safetensors_io
from editmgt_jax.checkpoint.convert.table import ConversionError, flatten, to_theirs
from editmgt_jax.models.transformer_config import TransformerConfig

TRANSFORMER_DIRS = ("editmgt", "transformer")
VQ_DIR = "vqvae"
CLIP_DIR = "text_encoder"
GEMMA_DIR = "llm_encoder"
TRANSFORMER_WEIGHTS = "diffusion_pytorch_model.safetensors"
VQ_WEIGHTS = "diffusion_pytorch_model.safetensors"
TEXT_WEIGHTS = "model.safetensors"
# Folders searched for tokenizers, first match wins (CLIP's may sit beside its weights).
CLIP_TOKENIZER_DIRS = ("tokenizer", CLIP_DIR)
GEMMA_TOKENIZER_DIRS = ("llm_tokenizer", "tokenizer_2", "gemma_tokenizer", GEMMA_DIR)
# Files of a transformers tokenizer folder that we carry (what `tokenizer_from_folder` reads,
# plus the sentencepiece model so that PyTorch users get the folder back whole).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)
BUNDLE_TOKENIZER_DIRS = {"clip": "tokenizers/clip", "gemma": "tokenizers/gemma"}
OFFICIAL_EXTRAS_DIR = "official"  # model_index.json, scheduler/ of the source folder
OPEN_CLIP = "open_clip"  # the CLIP tokenizer built from open-clip-torch's vocabulary
# The released model has 14 + 28 blocks; the pipeline's consolidation blocks are given for it.
RELEASED_NUM_BLOCKS = 42
DTYPES = ("float32", "bfloat16")
# safetensors header dtype names -> numpy dtype names.
_SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}
CLIP_POSITION_IDS = "text_model.embeddings.position_ids"
GEMMA_LM_HEAD = "lm_head.weight"


@dataclasses.dataclass
class Converted:
    """A converted folder, ready for `save_converted`.

    Attributes:
      bundle: the bundle (params as numpy / jax arrays).
      files: bundle-relative path -> source file to copy in (tokenizers, official extras).
      warnings: what the user should know (e.g. no Gemma tokenizer).
    """

    bundle: Bundle
    files: dict[str, str]
    warnings: list[str]


@dataclasses.dataclass(frozen=True)
class FolderParts:
    """Absolute part folders of a released EditMGT folder (tokenizers: None when absent)."""

    root: str
    transformer: str
    vq: str
    clip: str
    gemma: str
    clip_tokenizer: str | None
    gemma_tokenizer: str | None


# --- reading a released folder ------------------------------------------------------------------


def _has_weights(folder: str, pattern: str = "*.safetensors") -> bool:
    return bool(glob.glob(os.path.join(folder, pattern)))


def is_tokenizer_dir(path: str) -> bool:
    """True when `path` holds a tokenizer we read (tokenizer.json, or vocab.json + merges.txt)."""
    return os.path.isfile(os.path.join(path, "tokenizer.json")) or (
        os.path.isfile(os.path.join(path, "vocab.json"))
        and os.path.isfile(os.path.join(path, "merges.txt"))
    )


def _tokenizer_dir(root: str, names: tuple[str, ...]) -> str | None:
    return next(
        (os.path.join(root, n) for n in names if is_tokenizer_dir(os.path.join(root, n))), None
    )


def find_parts(folder: str) -> FolderParts:
    """The parts of a released folder; raises FileNotFoundError listing every missing one."""
    root = os.path.abspath(folder)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"Released EditMGT folder {root!r} does not exist")
    missing = []

    def need(sub: str, what: str, configs=("config.json",), pattern="*.safetensors") -> str:
        path = os.path.join(root, sub)
        config = next((c for c in configs if os.path.isfile(os.path.join(path, c))), None)
        if config is None:
            missing.append(f"{path}/ ({what}: {' or '.join(configs)} is missing)")
        elif not _has_weights(path, pattern):
            missing.append(
                f"{path}/ ({what}: no {pattern} weights; PyTorch .bin files are not read)"
            )
        return path

    transformer_sub = next(
        (d for d in TRANSFORMER_DIRS if os.path.isfile(os.path.join(root, d, "config.json"))),
        TRANSFORMER_DIRS[0],
    )
    if not any(os.path.isdir(os.path.join(root, d)) for d in TRANSFORMER_DIRS):
        missing.append(
            f"{root}/{' or '.join(d + '/' for d in TRANSFORMER_DIRS)} (the transformer: "
            "config.json + diffusion_pytorch_model.safetensors)"
        )
        transformer = os.path.join(root, transformer_sub)
    else:
        transformer = need(transformer_sub, "the transformer")
    vq = need(VQ_DIR, "the VQ tokenizer", configs=("config.json", "vq_config.json"))
    clip = need(CLIP_DIR, "the CLIP text encoder")
    gemma = need(GEMMA_DIR, "the Gemma 2 text encoder")
    if missing:
        raise FileNotFoundError(
            f"{root!r} is not a complete released EditMGT folder; missing:\n  "
            + "\n  ".join(missing)
        )
    return FolderParts(
        root=root,
        transformer=transformer,
        vq=vq,
        clip=clip,
        gemma=gemma,
        clip_tokenizer=_tokenizer_dir(root, CLIP_TOKENIZER_DIRS),
        gemma_tokenizer=_tokenizer_dir(root, GEMMA_TOKENIZER_DIRS),
    )


def safetensors_header(file: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """key -> (numpy dtype name, shape) from a safetensors file's header (reads no tensor)."""
    with open(file, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return {
        key: (_SAFETENSORS_DTYPES.get(v["dtype"], v["dtype"]), tuple(v["shape"]))
        for key, v in header.items()
    }


def _source_tensors(folder: str, pattern: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    for file in sorted(glob.glob(os.path.join(folder, pattern))):
        out.update(safetensors_header(file))
    return out


def _dtype_record(tensors: Mapping[str, tuple[str, tuple[int, ...]]]) -> dict[str, Any]:
    """{"default": the most common dtype, "other": {key: dtype} for the rest} (compact)."""
    names = [dtype for dtype, _ in tensors.values()]
    default = max(set(names), key=names.count) if names else "float32"
    return dict(default=default, other={k: d for k, (d, _) in tensors.items() if d != default})


def _source_dtype(record: Mapping[str, Any] | None, key: str) -> str | None:
    if not record:
        return None
    return record.get("other", {}).get(key, record.get("default"))


def released_pipeline(cfg: TransformerConfig) -> dict[str, Any]:
    """The released pipeline's defaults (bundle.DEFAULT_PIPELINE: 1024 px, 16 steps, guidance 6,
    reference_strength 1.1, consolidation block 30, lambda 0) for the transformer `cfg`.

    The consolidation blocks are given for the released 42-block model; for other depths (the
    miniature test model) each is moved to the same relative depth, so that it exists."""
    pipeline = dict(DEFAULT_PIPELINE)
    if cfg.num_blocks != RELEASED_NUM_BLOCKS:
        scale = (cfg.num_blocks - 1) / (RELEASED_NUM_BLOCKS - 1)
        pipeline["capture_blocks"] = sorted(
            {int(round(b * scale)) for b in DEFAULT_PIPELINE["capture_blocks"]}
        )
    return pipeline


def _load_parts(parts: FolderParts, dtype: str):
    """Loads the four parts, collecting every key problem into one ConversionError."""
    from editmgt_jax.checkpoint.convert.from_torch import load_transformer
    from editmgt_jax.checkpoint.convert.text_clip import load_clip_text
    from editmgt_jax.checkpoint.convert.text_gemma2 import load_gemma2
    from editmgt_jax.checkpoint.convert.vq import load_vq

    param_dtype = jnp.dtype(dtype)
    loaders: dict[str, tuple[str, Callable[[], Any]]] = {
        # The VQ stays float32: it is small, and the nearest-code lookup is precision-sensitive.
        "transformer": (
            parts.transformer,
            lambda: load_transformer(parts.transformer, dtype=dtype),
        ),
        "vq": (parts.vq, lambda: load_vq(parts.vq)),
        "clip": (parts.clip, lambda: load_clip_text(parts.clip, param_dtype=param_dtype)),
        "gemma": (parts.gemma, lambda: load_gemma2(parts.gemma, param_dtype=param_dtype)),
    }
    loaded, errors = {}, []
    for name, (folder, load) in loaders.items():
        try:
            loaded[name] = load()
        except ConversionError as e:
            errors.append((os.path.relpath(folder, parts.root), e))
    if errors:
        missing, unexpected, misshaped = [], [], []
        for sub, e in errors:
            missing += [f"{sub}: {k}" for k in e.missing]
            unexpected += [f"{sub}: {k}" for k in e.unexpected]
            misshaped += [(f"{sub}: {k}", got, want) for k, got, want in e.misshaped]
        raise ConversionError(
            f"Released folder {parts.root!r} ({', '.join(s + '/' for s, _ in errors)})",
            missing,
            unexpected,
            misshaped,
        )
    return loaded


def _check_widths(cfg: TransformerConfig, vq_model, clip, gemma, root: str) -> None:
    problems = []
    if not clip.config.with_projection:
        problems.append(
            f"{CLIP_DIR}/ has no text_projection.weight (EditMGT pools CLIP's projected EOS state)"
        )
    elif clip.config.projection_dim != cfg.pooled_projection_dim:
        problems.append(
            f"{CLIP_DIR}/ projects to {clip.config.projection_dim} but the transformer's "
            f"pooled_projection_dim is {cfg.pooled_projection_dim}"
        )
    if gemma.config.hidden_size != cfg.joint_attention_dim:
        problems.append(
            f"{GEMMA_DIR}/ has hidden_size {gemma.config.hidden_size} but the transformer's "
            f"joint_attention_dim is {cfg.joint_attention_dim}"
        )
    if vq_model.config.num_vq_embeddings != cfg.codebook_size:
        problems.append(
            f"{VQ_DIR}/ has {vq_model.config.num_vq_embeddings} codes but the transformer "
            f"predicts codebook_size={cfg.codebook_size}"
        )
    if problems:
        raise ValueError(f"The parts of {root!r} do not fit together:\n  " + "\n  ".join(problems))


def _tokenizer_files(folder: str | None, dest: str) -> dict[str, str]:
    if folder is None:
        return {}
    return {
        f"{dest}/{name}": os.path.join(folder, name)
        for name in TOKENIZER_FILES
        if os.path.isfile(os.path.join(folder, name))
    }


def _official_extras(root: str) -> dict[str, str]:
    files = {}
    if os.path.isfile(os.path.join(root, "model_index.json")):
        files[f"{OFFICIAL_EXTRAS_DIR}/model_index.json"] = os.path.join(root, "model_index.json")
    for path in sorted(glob.glob(os.path.join(root, "scheduler", "*.json"))):
        files[f"{OFFICIAL_EXTRAS_DIR}/scheduler/{os.path.basename(path)}"] = path
    return files


def convert_folder(
    folder: str,
    dtype: str = "float32",
    clip_tokenizer: str | None = None,
    gemma_tokenizer: str | None = None,
) -> Converted:
    """Reads a released EditMGT folder (module docstring) into a `Converted` bundle.

    Args:
      folder: the released folder.
      dtype: "float32" or "bfloat16", the stored dtype of the transformer and both text encoders
        (the VQ stays float32).
      clip_tokenizer, gemma_tokenizer: tokenizer folders to use instead of the released folder's
        (`tokenizer.json`, or CLIP's `vocab.json` + `merges.txt`).
    Raises:
      FileNotFoundError: listing every missing part.
      ConversionError: listing every missing, unexpected or mis-shaped key of every part.
      ValueError: parts that do not fit together, or a non-EditMGT transformer.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}; expected one of {DTYPES}")
    parts = find_parts(folder)
    for name, given in (("clip_tokenizer", clip_tokenizer), ("gemma_tokenizer", gemma_tokenizer)):
        if given is not None and not is_tokenizer_dir(given):
            raise FileNotFoundError(
                f"{name} {given!r} holds neither tokenizer.json nor vocab.json + merges.txt"
            )
    official = safetensors_io.read_config(parts.transformer)
    architecture = official.get("text_encoder_architecture", "CLIP_Gemma2")
    if architecture != "CLIP_Gemma2":
        raise ValueError(
            f"{parts.transformer}/config.json: text_encoder_architecture={architecture!r}; only "
            "EditMGT's CLIP_Gemma2 conditioning is supported"
        )
    loaded = _load_parts(parts, dtype)
    cfg, transformer_params = loaded["transformer"]
    vq_model, vq_params = loaded["vq"]
    clip, clip_params = loaded["clip"]
    gemma, gemma_params = loaded["gemma"]
    _check_widths(cfg, vq_model, clip, gemma, parts.root)
    cfg = cfg.replace(param_dtype=dtype)

    vq_config_name = (
        "config.json" if os.path.isfile(os.path.join(parts.vq, "config.json")) else "vq_config.json"
    )
    vq_pattern = "*.safetensors" if vq_config_name == "config.json" else "vq*.safetensors"
    clip_tensors = _source_tensors(parts.clip, "*.safetensors")
    gemma_tensors = _source_tensors(parts.gemma, "*.safetensors")
    gemma_prefix = "model." if any(k.startswith("model.") for k in gemma_tensors) else ""
    derived: dict[str, dict[str, Any]] = {"clip": {}, "gemma": {}}
    if CLIP_POSITION_IDS in clip_tensors:
        dt, shape = clip_tensors[CLIP_POSITION_IDS]
        derived["clip"][CLIP_POSITION_IDS] = dict(kind="arange", dtype=dt, shape=list(shape))
    if gemma.config.tie_word_embeddings and GEMMA_LM_HEAD in gemma_tensors:
        derived["gemma"][GEMMA_LM_HEAD] = dict(kind="copy", of=f"{gemma_prefix}embed_tokens.weight")

    def record(path: str, config: dict, tensors, extra=None) -> dict[str, Any]:
        return dict(
            folder=os.path.relpath(path, parts.root),
            config=config,
            dtypes=_dtype_record(tensors),
            derived=(extra or {}),
        )

    sources = dict(
        transformer=record(
            parts.transformer, official, _source_tensors(parts.transformer, "*.safetensors")
        ),
        vq=record(
            parts.vq,
            safetensors_io.read_config(parts.vq, vq_config_name),
            _source_tensors(parts.vq, vq_pattern),
        ),
        clip=record(
            parts.clip, safetensors_io.read_config(parts.clip), clip_tensors, derived["clip"]
        ),
        gemma=dict(
            record(
                parts.gemma,
                safetensors_io.read_config(parts.gemma),
                gemma_tensors,
                derived["gemma"],
            ),
            prefix=gemma_prefix,
        ),
    )

    warnings = []
    clip_tok = clip_tokenizer or parts.clip_tokenizer
    gemma_tok = gemma_tokenizer or parts.gemma_tokenizer
    files = _official_extras(parts.root)
    files.update(_tokenizer_files(clip_tok, BUNDLE_TOKENIZER_DIRS["clip"]))
    files.update(_tokenizer_files(gemma_tok, BUNDLE_TOKENIZER_DIRS["gemma"]))
    if clip_tok is None:
        warnings.append(
            f"No CLIP tokenizer in {list(CLIP_TOKENIZER_DIRS)}: editing uses the CLIP BPE built "
            "from open-clip-torch's bundled vocabulary"
        )
    if gemma_tok is None:
        warnings.append(
            f"No Gemma tokenizer in {list(GEMMA_TOKENIZER_DIRS)}: the bundle converts, but editing "
            "needs one (convert again with --gemma_tokenizer DIR, or pass "
            "Editor.from_bundle(..., text_encoder=...))"
        )
    spec = dict(
        kind="clip_gemma2",
        params="bundle",  # both encoders' weights are in text_encoder.safetensors
        clip_config=clip.config.to_transformers(),
        gemma_config=gemma.config.to_transformers(),
        clip_tokenizer=BUNDLE_TOKENIZER_DIRS["clip"] if clip_tok else OPEN_CLIP,
        gemma_tokenizer=BUNDLE_TOKENIZER_DIRS["gemma"] if gemma_tok else None,
    )
    metadata = dict(
        converted_from="official",
        source_folder=parts.root,
        random_init=False,
        dtype=dtype,
        created_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        sources=sources,
        tokenizer_sources=dict(
            clip=None if clip_tok is None else os.path.abspath(clip_tok),
            gemma=None if gemma_tok is None else os.path.abspath(gemma_tok),
        ),
        warnings=warnings,
    )
    bundle = Bundle(
        transformer_config=cfg,
        transformer_params=transformer_params,
        vq_config=sources["vq"]["config"],
        vq_params=vq_params,
        text_encoder=spec,
        pipeline=released_pipeline(cfg),
        metadata=metadata,
        text_params=dict(clip=clip_params, gemma=gemma_params),
    )
    return Converted(bundle=bundle, files=files, warnings=warnings)


# --- writing folders atomically -----------------------------------------------------------------


def replace_folder(tmp: str, path: str) -> None:
    """Moves the finished folder `tmp` onto `path` (replacing it): an atomic rename locally; for a
    URL an upload whose bundle.json comes last (`paths.publish_folder`)."""
    if paths.is_url(path):
        paths.publish_folder(tmp, path, last=MANIFEST)
    else:
        _replace_local_folder(tmp, path)


def _staging(path: str, overwrite: bool) -> tuple[str, str]:
    """(target, a fresh staging folder): beside the target locally, in the temp folder for a URL."""
    path = paths.abspath(path)
    if paths.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    if paths.is_url(path):
        return path, make_temp_dir(tempfile.gettempdir(), prefix=f".{paths.basename(path)}.")
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    return path, make_temp_dir(parent, prefix=f".{os.path.basename(path)}.")


def save_converted(converted: Converted, out: str, overwrite: bool = False) -> str:
    """Writes the bundle plus its tokenizer and extra files to `out`, atomically; returns `out`."""
    out, stage = _staging(out, overwrite)
    try:
        inner = save_bundle(os.path.join(stage, "bundle"), converted.bundle)
        for rel, src in converted.files.items():
            dest = os.path.join(inner, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copyfile(src, dest)
        replace_folder(inner, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out


# --- the text encoder of a converted bundle -----------------------------------------------------


def text_encoder_from_bundle(
    spec: Mapping[str, Any],
    text_params: Mapping[str, Any],
    bundle_path: str | None,
    *,
    dtype=jnp.float32,
    clip_tokenizer=None,
    gemma_tokenizer=None,
    precision=None,
    gemma_device: jax.Device | None = None,
):
    """The `CLIPGemma2Encoder` of a converted bundle (weights from its text_encoder.safetensors).

    Args:
      spec: the bundle's `text_encoder` section (kind "clip_gemma2", params "bundle").
      text_params: {"clip": ..., "gemma": ...} (`Bundle.text_params`).
      bundle_path: the bundle folder (its tokenizers/ are relative to it).
      dtype: compute dtype of both encoders (parameters stay as stored).
      clip_tokenizer, gemma_tokenizer: `TextTokenizer`s replacing the bundle's.
      precision, gemma_device: as `clip_gemma2_encoder`.
    Raises:
      ValueError: the bundle has no Gemma tokenizer and none is given.
    """
    from editmgt_jax.models.text.clip import CLIPText, CLIPTextConfig
    from editmgt_jax.models.text.encoder import (
        CLIP_MAX_LENGTH,
        GEMMA_MAX_LENGTH,
        CLIPGemma2Encoder,
    )
    from editmgt_jax.models.text.gemma2 import Gemma2, Gemma2Config
    from editmgt_jax.models.text.tokenizer import (
        clip_tokenizer_from_open_clip,
        tokenizer_from_folder,
    )

    if "clip" not in text_params or "gemma" not in text_params:
        raise ValueError(
            f"Bundle {bundle_path!r}: text_encoder.safetensors must hold clip/ and gemma/ params, "
            f"got {sorted(text_params)}"
        )

    def resolve(rel: str) -> str:
        return rel if os.path.isabs(rel) else os.path.join(bundle_path or ".", rel)

    if gemma_tokenizer is None:
        rel = spec.get("gemma_tokenizer")
        if rel is None:
            raise ValueError(
                f"Bundle {bundle_path!r} has no Gemma tokenizer (none was found when it was "
                "converted), so it cannot encode instructions. Convert again with "
                "`python -m launch.convert --from_torch DIR --gemma_tokenizer TOKENIZER_DIR "
                "--out CKPT`, or pass Editor.from_bundle(path, text_encoder=...) (e.g. "
                "editmgt_jax.checkpoint.folder.text_encoder_from_bundle(..., gemma_tokenizer="
                "tokenizer_from_folder(TOKENIZER_DIR, 256)))"
            )
        gemma_tokenizer = tokenizer_from_folder(resolve(rel), GEMMA_MAX_LENGTH)
    if clip_tokenizer is None:
        rel = spec.get("clip_tokenizer", OPEN_CLIP)
        clip_tokenizer = (
            clip_tokenizer_from_open_clip(CLIP_MAX_LENGTH)
            if rel == OPEN_CLIP
            else tokenizer_from_folder(resolve(rel), CLIP_MAX_LENGTH)
        )

    def stored(params) -> Any:
        return jax.tree.leaves(params)[0].dtype

    clip_params, gemma_params = jax.device_put((text_params["clip"], text_params["gemma"]))
    clip = CLIPText(
        CLIPTextConfig.from_transformers(spec["clip_config"], with_projection=True),
        dtype=dtype,
        param_dtype=stored(clip_params),
        precision=precision,
    )
    gemma = Gemma2(
        Gemma2Config.from_transformers(spec["gemma_config"]),
        dtype=dtype,
        param_dtype=stored(gemma_params),
        precision=precision,
    )
    return CLIPGemma2Encoder(
        clip, clip_params, clip_tokenizer, gemma, gemma_params, gemma_tokenizer, gemma_device
    )


# --- export back to the released layout ---------------------------------------------------------


def _restore(
    state: dict[str, np.ndarray], source: Mapping[str, Any] | None, dtype: str
) -> dict[str, np.ndarray]:
    """Casts each tensor (dtype "source": back to its source dtype) and re-creates derived keys."""
    dtypes = (source or {}).get("dtypes")
    out = {}
    for key, value in state.items():
        value = np.asarray(value)
        want = None
        if dtype == "source":
            want = _source_dtype(dtypes, key)
        elif dtype in DTYPES and jnp.issubdtype(value.dtype, jnp.floating):
            want = dtype
        if want is not None and jnp.dtype(want) != value.dtype:
            value = value.astype(jnp.dtype(want))
        out[key] = value
    for key, rule in (source or {}).get("derived", {}).items():
        if rule["kind"] == "arange":
            shape = tuple(rule["shape"])
            out[key] = np.broadcast_to(
                np.arange(shape[-1], dtype=jnp.dtype(rule["dtype"])), shape
            ).copy()
        elif rule["kind"] == "copy":
            out[key] = out[rule["of"]].copy()
    return out


def _write_part(root: str, sub: str, config: dict, state: dict, weights: str) -> int:
    safetensors_io.write_folder(os.path.join(root, sub), config, state, weights)
    return len(state)


def export_to_torch(
    checkpoint: str, out: str, dtype: str = "source", overwrite: bool = False
) -> dict[str, Any]:
    """Writes a bundle back as a released EditMGT folder; returns a summary dict.

    Parts: the transformer (into the subfolder it came from, `editmgt/` by default), `vqvae/`,
    and for converted CLIP_Gemma2 bundles `text_encoder/` and `llm_encoder/`, the tokenizers and
    the official extras. Config files are the source folder's own when the bundle was converted
    (else generated from our configs).

    Args:
      checkpoint: the bundle folder.
      out: the folder to write (atomically: it appears complete or not at all).
      dtype: "source" (each tensor in the dtype it had in the converted folder; the stored dtype
        for bundles not converted from one), "stored" (as in the bundle), "float32" or
        "bfloat16".
      overwrite: replace an existing `out`.
    """
    from editmgt_jax.checkpoint.convert.text_clip import clip_text_rules
    from editmgt_jax.checkpoint.convert.text_gemma2 import gemma2_rules
    from editmgt_jax.checkpoint.convert.to_torch import transformer_state_dict
    from editmgt_jax.checkpoint.convert.vq import vq_rules
    from editmgt_jax.models.text.clip import CLIPTextConfig
    from editmgt_jax.models.text.gemma2 import Gemma2Config
    from editmgt_jax.models.vq import VQConfig

    if dtype not in ("source", "stored", *DTYPES):
        raise ValueError(f"dtype={dtype!r}; expected source, stored, float32 or bfloat16")
    bundle = load_bundle(checkpoint)
    sources = bundle.metadata.get("sources", {}) if bundle.metadata.get("converted_from") else {}
    cfg = bundle.transformer_config
    out, stage = _staging(out, overwrite)
    written: dict[str, Any] = {}
    try:
        src = sources.get("transformer")
        state = _restore(transformer_state_dict(cfg, bundle.transformer_params), src, dtype)
        sub = src["folder"] if src else TRANSFORMER_DIRS[0]
        config = src["config"] if src else cfg.to_official_dict()
        written[sub] = _write_part(stage, sub, config, state, TRANSFORMER_WEIGHTS)

        src = sources.get("vq")
        vq_cfg = VQConfig.from_diffusers(bundle.vq_config)
        state = to_theirs(vq_rules(vq_cfg), bundle.vq_params, what="VQ parameters")
        # The released layout names the VQ's files config.json + diffusion_pytorch_model.
        config = src["config"] if src else vq_cfg.to_diffusers()
        written[VQ_DIR] = _write_part(
            stage, VQ_DIR, config, _restore(state, src, dtype), VQ_WEIGHTS
        )

        spec = bundle.text_encoder
        if spec.get("kind") == "clip_gemma2" and bundle.text_params is not None:
            clip_cfg = CLIPTextConfig.from_transformers(spec["clip_config"], with_projection=True)
            src = sources.get("clip")
            state = to_theirs(
                clip_text_rules(clip_cfg), bundle.text_params["clip"], what="CLIP parameters"
            )
            sub = src["folder"] if src else CLIP_DIR
            config = src["config"] if src else clip_cfg.to_transformers()
            written[sub] = _write_part(
                stage, sub, config, _restore(state, src, dtype), TEXT_WEIGHTS
            )

            gemma_cfg = Gemma2Config.from_transformers(spec["gemma_config"])
            src = sources.get("gemma")
            prefix = src.get("prefix", "model.") if src else "model."
            state = to_theirs(
                gemma2_rules(gemma_cfg, prefix),
                bundle.text_params["gemma"],
                what="Gemma 2 parameters",
            )
            sub = src["folder"] if src else GEMMA_DIR
            config = src["config"] if src else gemma_cfg.to_transformers()
            written[sub] = _write_part(
                stage, sub, config, _restore(state, src, dtype), TEXT_WEIGHTS
            )
        elif spec.get("kind") == "clip_gemma2" and spec.get("folder"):
            written["text_encoders"] = f"not in the bundle; they are in {spec['folder']!r}"
        else:
            written["text_encoders"] = f"{spec.get('kind')!r} is not part of the released layout"

        # Tokenizers back where they came from; official extras (model_index.json, scheduler/).
        tokenizer_sources = bundle.metadata.get("tokenizer_sources", {})
        for name, default_sub in (
            ("clip", CLIP_TOKENIZER_DIRS[0]),
            ("gemma", GEMMA_TOKENIZER_DIRS[0]),
        ):
            folder = os.path.join(bundle.path, BUNDLE_TOKENIZER_DIRS[name])
            if not os.path.isdir(folder):
                continue
            source = tokenizer_sources.get(name)
            root = bundle.metadata.get("source_folder")
            sub = default_sub
            if source and root and os.path.dirname(source) == root:
                sub = os.path.basename(source)  # the folder it came from (e.g. text_encoder/)
            os.makedirs(os.path.join(stage, sub), exist_ok=True)
            for file in sorted(os.listdir(folder)):
                shutil.copyfile(os.path.join(folder, file), os.path.join(stage, sub, file))
            written[f"{sub} (tokenizer)"] = len(os.listdir(folder))
        extras = os.path.join(bundle.path, OFFICIAL_EXTRAS_DIR)
        if os.path.isdir(extras):
            shutil.copytree(extras, stage, dirs_exist_ok=True)
            written["official extras"] = sorted(os.listdir(extras))
        replace_folder(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return dict(out=out, parts=written, dtype=dtype)


def param_counts(bundle: Bundle) -> dict[str, int]:
    """Parameters per part of a bundle."""
    count = lambda tree: int(sum(np.size(x) for x in flatten(tree).values()))
    counts = dict(transformer=count(bundle.transformer_params), vq=count(bundle.vq_params))
    for name, tree in (bundle.text_params or {}).items():
        counts[name] = count(tree)
    return counts


def folder_bytes(path: str) -> int:
    """Bytes of every file under `path`."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
