r"""Fits a `PatchVQ` tokenizer (k-means over image cells) on the synthetic edit world.

    python -m launch.fit_patch_vq --config configs/patch_vq_default.py --workdir workdirs/patch_vq
    python -m launch.fit_patch_vq --config configs/patch_vq_default.py:runlocal --workdir /tmp/pvq

Cells of `patch_size` pixels from the source and target images of `num_examples` training examples
are deduplicated and clustered into `num_codes` codebook patches (weighted Lloyd iterations). The
fit is judged on `eval_examples` held-out examples: PSNR of the round trip, codes in use, and the
VQ ceiling per category (the success a transformer that predicted every target token exactly
would reach; with paste-back, cells whose id did not change keep the source's pixels).

Writes `--workdir/vq/` (config.json + safetensors; `editmgt_jax.checkpoint.convert.vq.load_vq`
reads it, `launch.tokenize_shards --vq` uses it) atomically, and `--workdir/fit.json`; prints the
same JSON as its last line. Deterministic for a config.

With `extend_from` (a VQ folder or a bundle holding a `PatchVQ`), the fitted codebook keeps that
one's codes as ids 0..K-1 and adds `num_codes - K` codes fitted on the cells it codes worst (the
`extend_quantile` share of distinct cells by squared error, weighted by count x error): a cell
coded well keeps its id, so a transformer trained on the old ids can be grown onto the new
codebook (`launch.grow_codebook`) instead of trained anew.
"""

from __future__ import annotations

import collections
import json
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags
from tqdm import tqdm

from data_pipelines.synthetic.generate import make_example
from editmgt_jax.atomic import atomic_path, make_temp_dir
from editmgt_jax.checkpoint.convert.vq import save_vq
from editmgt_jax.evaluation import metrics
from editmgt_jax.evaluation.edit_eval import category_means, vq_ceiling
from editmgt_jax.models.patch_vq import PatchVQ, PatchVQConfig, to_patches
from editmgt_jax.training.kmeans import (
    extended_codebook,
    fit_kmeans,
    load_patch_codebook,
    unique_rows,
)
from launch import cli

_CONFIG = config_flags.DEFINE_config_file("config", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (vq/, fit.json).")
flags.mark_flags_as_required(["config", "workdir"])


def _examples(seed: int, num: int, size: int, split: str, desc: str) -> list:
    return [make_example(seed, i, size, split) for i in tqdm(range(num), desc=desc, leave=False)]


def training_cells(examples, patch_size: int) -> np.ndarray:
    """uint8 [N, p*p*3]: every cell of every source and target image."""
    images = np.stack([e.source for e in examples] + [e.target for e in examples])
    cells = to_patches(images, patch_size)
    return np.asarray(cells).reshape(-1, cells.shape[-1])


def fit(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Fits the codebook, writes `workdir/vq` and `workdir/fit.json`; returns the report."""
    size, p = config.image_size, config.patch_size
    if size % p:
        raise ValueError(f"image_size={size} is not a multiple of patch_size={p}")
    train = _examples(config.synthetic_seed, config.num_examples, size, "train", "train world")
    points, counts = unique_rows(training_cells(train, p))
    bar = tqdm(total=config.steps, desc="k-means")

    def progress(step, error):
        bar.update(1)
        bar.set_postfix(mse=f"{error / 255.0**2 / points.shape[1]:.2e}")

    extend_from = config.get("extend_from", "")
    if extend_from:
        codebook, info = extended_codebook(
            load_patch_codebook(extend_from, p),
            points.astype(np.float32) / 255.0,
            counts,
            config.num_codes,
            float(config.get("extend_quantile", 0.7)),
            jax.random.key(config.seed),
            config.steps,
            progress,
        )
    else:
        codebook, info = fit_kmeans(
            points.astype(np.float32) / 255.0,
            counts,
            config.num_codes,
            jax.random.key(config.seed),
            config.steps,
            progress,
        )
    bar.close()
    model = PatchVQ(PatchVQConfig(patch_size=p, num_vq_embeddings=config.num_codes))
    params = {"codebook": jnp.asarray(codebook)}
    encode = jax.jit(lambda x: model.apply({"params": params}, x, method=model.encode_to_ids))
    decode = jax.jit(lambda i: model.apply({"params": params}, i, method=model.decode_ids))

    def tokenize(images: np.ndarray) -> np.ndarray:
        return np.asarray(encode(jnp.asarray(images, jnp.float32) / 255.0))

    def reconstruct(images: np.ndarray) -> np.ndarray:
        out = np.asarray(decode(jnp.asarray(tokenize(images))))
        return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)

    heldout = _examples(config.eval_seed, config.eval_examples, size, "heldout", "held-out")
    targets = np.stack([e.target for e in heldout])
    mse = float(np.mean(np.square(reconstruct(targets).astype(np.float64) - targets)))
    used = np.unique(tokenize(np.concatenate([targets, np.stack([e.source for e in heldout])])))
    ceilings = {
        "vq_ceiling": vq_ceiling(heldout, reconstruct),
        "vq_ceiling_paste_back": vq_ceiling(heldout, reconstruct, tokenize=tokenize),
        "vq_ceiling_clean": vq_ceiling(
            heldout, reconstruct, tokenize=tokenize, judge=metrics.edit_clean
        ),
    }
    per_category: dict = collections.defaultdict(dict)
    for name, values in ceilings.items():
        for category, mean in category_means(heldout, values).items():
            per_category[category][name] = mean
    report = dict(
        num_codes=config.num_codes,
        extended_from=extend_from or None,
        patch_size=p,
        distinct_training_cells=int(points.shape[0]),
        train_mse=info["mse"] / points.shape[1],
        heldout_psnr=float(10 * np.log10(255.0**2 / max(mse, 1e-12))),
        heldout_codes_used=int(used.size),
        **{name: float(np.mean(values)) for name, values in ceilings.items()},
        per_category=dict(per_category),
        eval_examples=len(heldout),
    )
    os.makedirs(workdir, exist_ok=True)
    final = os.path.join(workdir, "vq")
    tmp = make_temp_dir(workdir, prefix=".vq.")
    try:
        save_vq(tmp, model, params)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    with atomic_path(os.path.join(workdir, "fit.json")) as path, open(path, "w") as f:
        json.dump(report, f, indent=2)
    return report


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    print(json.dumps(fit(_CONFIG.value, _WORKDIR.value)))


def run() -> None:
    """The console script (pyproject.toml): the same absl main as `python -m`."""
    cli.run_main(main)


if __name__ == "__main__":
    run()
