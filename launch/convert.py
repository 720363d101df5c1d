"""Converts a released EditMGT folder (PyTorch safetensors) into one checkpoint bundle.

    python -m launch.convert --from_torch /path/to/EditMGT --out /ckpt/editmgt
    python -m launch.convert --from_torch /path/to/EditMGT --out /ckpt/editmgt_bf16 \
        --dtype bfloat16 --gemma_tokenizer /path/to/gemma-2-2b   # a tokenizer from elsewhere
    python -m launch.edit --checkpoint /ckpt/editmgt --image in.png --instruction "..." --out o.png

The folder holds `editmgt/` or `transformer/`, `vqvae/`, `text_encoder/` (CLIP), `llm_encoder/`
(Gemma 2) and optional tokenizer folders (see editmgt_jax/checkpoint/folder.py). The bundle
stores the transformer, the VQ, both text encoders and the tokenizers found, with the released
pipeline defaults (1024 px, 16 steps, guidance 6, reference_strength 1.1). `--dtype bfloat16`
stores the transformer and text encoders in bfloat16 (the VQ stays float32). A missing part, or
missing / unexpected / mis-shaped keys, fail with the complete list. Without a Gemma tokenizer
the conversion still succeeds (with a warning); editing then needs one.

Prints one JSON line: out, source, dtype, params (per part), bundle_bytes, warnings, seconds.
"""

from __future__ import annotations

import json
import time

from absl import app, flags

from launch import cli

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the flags (only when run as a script: importing this module defines none)."""
    flags.DEFINE_string("from_torch", None, "Released EditMGT folder.", required=True)
    flags.DEFINE_string("out", None, "Bundle folder to write.", required=True)
    flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Stored parameter dtype.")
    flags.DEFINE_bool("overwrite", False, "Replace an existing bundle at --out.")
    flags.DEFINE_string("clip_tokenizer", None, "CLIP tokenizer folder (default: the folder's).")
    flags.DEFINE_string("gemma_tokenizer", None, "Gemma tokenizer folder (default: the folder's).")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from editmgt_jax.checkpoint import folder

    start = time.perf_counter()
    try:
        converted = folder.convert_folder(
            FLAGS.from_torch,
            dtype=FLAGS.dtype,
            clip_tokenizer=FLAGS.clip_tokenizer,
            gemma_tokenizer=FLAGS.gemma_tokenizer,
        )
        path = folder.save_converted(converted, FLAGS.out, overwrite=FLAGS.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as e:  # ConversionError included
        raise app.UsageError(str(e)) from e
    report = dict(
        out=path,
        source=converted.bundle.metadata["source_folder"],
        dtype=FLAGS.dtype,
        params=folder.param_counts(converted.bundle),
        bundle_bytes=folder.folder_bytes(path),
        warnings=converted.warnings,
        seconds=round(time.perf_counter() - start, 2),
    )
    print(json.dumps(report))


def run():
    """The console script (pyproject.toml): the same absl main as `python -m`."""
    define_flags()
    cli.run_main(main)


if __name__ == "__main__":
    run()
