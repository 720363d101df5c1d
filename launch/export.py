"""Exports a bundle: back to the released PyTorch layout, and/or the sampler as StableHLO.

    python -m launch.export --checkpoint /ckpt/editmgt --to_torch /out/EditMGT
    python -m launch.export --checkpoint /ckpt/editmgt --stablehlo /out/sampler.stablehlo \
        --grid 64 --batch 1 --steps 16

`--to_torch OUT` writes `editmgt/` (or the transformer folder the bundle came from), `vqvae/`, and
for converted bundles `text_encoder/`, `llm_encoder/`, the tokenizers and `model_index.json` /
`scheduler/`, with the official key names. `--torch_dtype source` (default) writes every tensor in
the dtype it had in the converted folder, so convert -> export is bit-exact for a float32 bundle.

`--stablehlo FILE` serializes the whole edit sampler (CFG, region-hold, re-masking: one
`lax.while_loop`) with `jax.export` for fixed shapes: `--grid` tokens per side (or HxW), `--batch`,
`--steps`, `--text_len` (default: the text encoder's, 256 for Gemma). The transformer's params are
the artifact's first argument, not baked in (the file stays small); see
editmgt_jax/sampling/export.py for the calling convention and `load_sampler`. Also writes
FILE.json describing the inputs and outputs.

Prints one JSON line: checkpoint, to_torch (parts written), stablehlo (bytes), seconds.
"""

from __future__ import annotations

import json
import time

from absl import app, flags

from launch import cli

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the flags (only when run as a script: importing this module defines none)."""
    flags.DEFINE_string("checkpoint", None, "Bundle folder.", required=True)
    flags.DEFINE_string("to_torch", None, "Write the released PyTorch layout to this folder.")
    flags.DEFINE_enum(
        "torch_dtype",
        "source",
        ["source", "stored", "float32", "bfloat16"],
        "Tensor dtype of --to_torch: the converted folder's (source), the bundle's, or one.",
    )
    flags.DEFINE_string("stablehlo", None, "Write the serialized sampler to this file.")
    flags.DEFINE_string("grid", None, "Token grid of --stablehlo: G (square) or HxW.")
    flags.DEFINE_integer("batch", 1, "Batch size of --stablehlo.")
    flags.DEFINE_integer("steps", None, "Decoding steps of --stablehlo (default: the bundle's).")
    flags.DEFINE_integer("text_len", None, "Text positions (default: the text encoder's).")
    flags.DEFINE_float("reference_strength", None, "Default: the bundle's.")
    flags.DEFINE_list("platforms", None, "e.g. cpu,cuda,tpu (default: the current backend).")
    flags.DEFINE_bool("overwrite", False, "Replace an existing --to_torch folder.")


def parse_grid(text: str) -> tuple[int, int]:
    """'64' -> (64, 64); '48x64' -> (48, 64)."""
    try:
        sides = tuple(int(s) for s in text.lower().split("x"))
    except ValueError:
        sides = ()
    if len(sides) == 1:
        sides = sides * 2
    if len(sides) != 2 or min(sides) < 1:
        raise ValueError(f"--grid {text!r}: expected G or HxW with positive integers")
    return sides


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.to_torch is None and FLAGS.stablehlo is None:
        raise app.UsageError("Give --to_torch OUT and/or --stablehlo FILE")
    if FLAGS.stablehlo is not None and FLAGS.grid is None:
        raise app.UsageError("--stablehlo needs --grid (tokens per side, or HxW)")
    from editmgt_jax.checkpoint import folder

    start = time.perf_counter()
    report: dict = dict(checkpoint=FLAGS.checkpoint)
    try:
        if FLAGS.to_torch is not None:
            report["to_torch"] = folder.export_to_torch(
                FLAGS.checkpoint, FLAGS.to_torch, dtype=FLAGS.torch_dtype, overwrite=FLAGS.overwrite
            )
        if FLAGS.stablehlo is not None:
            from editmgt_jax.sampling import export

            report["stablehlo"] = export.export_bundle_sampler(
                FLAGS.checkpoint,
                FLAGS.stablehlo,
                grid=parse_grid(FLAGS.grid),
                batch=FLAGS.batch,
                steps=FLAGS.steps,
                text_len=FLAGS.text_len,
                reference_strength=FLAGS.reference_strength,
                platforms=FLAGS.platforms,
            )
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        raise app.UsageError(str(e)) from e
    report["seconds"] = round(time.perf_counter() - start, 2)
    print(json.dumps(report))


def run():
    """The console script (pyproject.toml): the same absl main as `python -m`."""
    define_flags()
    cli.run_main(main)


if __name__ == "__main__":
    run()
