r"""Grows a bundle's transformer onto an extended `PatchVQ` codebook (`launch.fit_patch_vq` with
`extend_from`): same weights, token tables for the added codes.

    python -m launch.grow_codebook --bundle editmgt_jax/assets/default_model \
        --vq workdirs/patch_vq_4096/vq --out workdirs/grown_bundle

The new codebook must start with the bundle's codes unchanged. Each added code starts from the
embedding and output weights of its nearest old code (`token_init.grown_token_tables`), so the
grown model's most likely code is the old model's (ties go to the old, lower id); fine-tune it on shards tokenized with the
new VQ (`launch.tokenize_shards --vq`) with `init_from` set to the written bundle. Writes the
bundle atomically (refuses an existing `--out`) and prints a JSON summary.
"""

from __future__ import annotations

import dataclasses
import json

from absl import app, flags

from launch import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("bundle", None, "Bundle whose transformer is grown.")
flags.DEFINE_string("vq", None, "The extended PatchVQ: a VQ folder or a bundle.")
flags.DEFINE_string("out", None, "Folder of the grown bundle (must not exist).")
flags.mark_flags_as_required(["bundle", "vq", "out"])


def grow(bundle_path: str, vq_path: str, out: str) -> dict:
    """Writes the grown bundle to `out`; returns the summary."""
    import jax
    import numpy as np

    from editmgt_jax.checkpoint import load_bundle, save_bundle
    from editmgt_jax.checkpoint.convert.vq import load_vq
    from editmgt_jax.models.patch_vq import PatchVQ
    from editmgt_jax.training.token_init import grown_token_tables

    bundle = load_bundle(bundle_path)
    if bundle.vq_config.get("_class_name") != "PatchVQ":
        raise ValueError(
            f"{bundle_path!r} has a {bundle.vq_config.get('_class_name')}, not a PatchVQ"
        )
    model, vq_params = load_vq(vq_path)
    if not isinstance(model, PatchVQ):
        raise ValueError(f"--vq {vq_path!r} holds a {type(model).__name__}, not a PatchVQ")
    old = np.asarray(bundle.vq_params["codebook"], np.float32)
    new = np.asarray(vq_params["codebook"], np.float32)
    if model.config.patch_size != int(bundle.vq_config["patch_size"]):
        raise ValueError(
            f"--vq has patch_size {model.config.patch_size}, the bundle "
            f"{bundle.vq_config['patch_size']}"
        )
    params = grown_token_tables(bundle.transformer_params, old, new)
    cfg = bundle.transformer_config.replace(vocab_size=new.shape[0] + 1, codebook_size=new.shape[0])
    grown = dataclasses.replace(
        bundle,
        transformer_config=cfg,
        transformer_params=params,
        vq_config=model.config.to_diffusers(),
        vq_params=jax.tree.map(np.asarray, vq_params),  # the codebook (and a refiner, if any)
        metadata=dict(
            bundle.metadata,
            grown_from=dict(bundle=bundle_path, vq=vq_path, codes=[old.shape[0], new.shape[0]]),
        ),
        path=None,
    )
    save_bundle(out, grown)
    return dict(out=out, codes_before=int(old.shape[0]), codes_after=int(new.shape[0]))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    print(json.dumps(grow(FLAGS.bundle, FLAGS.vq, FLAGS.out)))


def run() -> None:
    """The console script (pyproject.toml): the same absl main as `python -m`."""
    cli.run_main(main)


if __name__ == "__main__":
    run()
