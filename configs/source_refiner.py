r"""The embedded default model's source-guided refiner (`models.source_refiner`), fitted by
`launch.fit_source_refiner` onto the bundle's PatchVQ:

    python -m launch.fit_source_refiner --config configs/source_refiner.py \
        --config.vq=editmgt_jax/assets/default_model --out workdirs/refined_bundle
    python -m launch.fit_source_refiner --config configs/source_refiner.py:model \
        --config.vq=editmgt_jax/assets/default_model --out workdirs/self_refined_bundle
    python -m launch.fit_source_refiner --config configs/source_refiner.py:runlocal \
        --config.vq=BUNDLE --out /tmp/refined

Pairs (`pairs`): "target": the source and target images of `num_examples` training examples of
the synthetic world, the target's codes decoded; "model": the bundle's own edits of
`num_examples` scenes with the training phrasings at world seed `model_pairs_seed` (scenes the
transformer never trained on), its tokens decoded. Judged on `eval_examples` edits of the tuning
split (held-out phrasings, world seed 2702701): the clean ceiling with and without the refiner,
and (for a bundle) its own edits judged clean.
"""

from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    parts = set(arg.split(",")) if arg else set()
    if not parts <= {"model", "runlocal"}:
        raise ValueError(
            "configs/source_refiner.py takes no argument, 'model', 'runlocal' or 'model,runlocal'; "
            f"got {arg!r}"
        )
    config = ml_collections.ConfigDict()
    config.vq = ""  # a bundle with a PatchVQ, or a PatchVQ folder (required)
    config.refiner_from = ""  # copy this fitted refiner (same codebook) instead of fitting
    config.pairs = "target"  # or "model": the bundle's own edits (see the docstring)
    config.model_pairs_seed = 5130001  # a world seed of its own for "model" pairs
    config.edit_batch_size = 32
    config.seed = 0
    config.width = 32
    config.depth = 3
    config.steps = 1500
    config.batch_size = 32
    config.learning_rate = 2e-3
    config.synthetic_seed = 20261201  # the training world (configs/default.py uses the same)
    config.num_examples = 3000
    config.image_size = 64
    config.eval_seed = 2702701  # issue 27's tuning split
    config.eval_examples = 280
    if "model" in parts:  # the shipped refiner's recipe (docs/default_model.md, "Clean edits")
        config.pairs, config.num_examples, config.steps = "model", 4000, 3000
        config.width, config.depth = 48, 5  # 0.450 clean against 0.414 for 32 x 3 (tuning split)
    if "runlocal" in parts:
        config.width, config.depth, config.steps = 4, 1, 5
        config.num_examples, config.eval_examples, config.batch_size = 8, 7, 4
    return config
