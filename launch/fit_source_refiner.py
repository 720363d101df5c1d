r"""Fits a source-guided refiner (`models.source_refiner`) onto a `PatchVQ` and writes it out.

    python -m launch.fit_source_refiner --config configs/source_refiner.py \
        --config.vq=editmgt_jax/assets/default_model --out workdirs/refined_bundle

`config.vq` is a bundle (then `--out` is that bundle with the refined VQ: same transformer, text
encoder and pipeline; the transformer's token ids are unchanged) or a PatchVQ folder (then
`--out` is a VQ folder). The pairs and the judging split are in the config (its docstring).
Writes atomically, refuses an existing `--out`, and prints (and stores as `refiner_fit` in a
bundle's metadata, or `--out`/fit.json beside a folder) a JSON report: the final training loss
and the clean ceiling per category before and after.

`config.pairs` says what the refiner learns to decode: "target" (the target's own codes: what a
transformer that predicted every token would output; the fit then depends on the codebook only)
or "model" (a bundle's own edits of the training world, decoded: it learns to repair the
transformer's mistakes, e.g. keep a shape's pixels where the model re-drew its edge cell). With a
bundle the report also has `clean_edits_before` / `_after`: the bundle's own edits of the tuning
split, judged clean, with the VQ it came with and with the new refiner.

With `config.refiner_from` (a bundle or VQ folder whose PatchVQ has a refiner and the same
codebook), its fitted refiner and report are copied instead of fitting again (a refiner fitted
on "target" pairs suits any transformer on that codebook; one fitted on "model" pairs suits the
transformer whose edits it saw best):

    python -m launch.fit_source_refiner --config configs/source_refiner.py \
        --config.vq=NEW_BUNDLE --config.refiner_from=REFINED_BUNDLE --out OUT
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
from absl import app, flags
from ml_collections import config_flags
from tqdm import tqdm

from launch import cli

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined when run, not on import: tests import `fit` beside other launchers' `--config`."""
    config_flags.DEFINE_config_file("config", lock_config=True)
    flags.DEFINE_string("out", None, "The refined bundle or VQ folder (must not exist).")
    flags.mark_flags_as_required(["out"])


def _encoder(vq, vq_params):
    """Jitted uint8 images [N, H, W, 3] -> token ids [N, h, w] of the PatchVQ `vq`."""
    import jax
    import jax.numpy as jnp

    return jax.jit(
        lambda x: vq.apply(
            {"params": vq_params}, jnp.asarray(x, jnp.float32) / 255.0, method=vq.encode_to_ids
        )
    )


def _decoded_pairs(vq_model, vq_params, ids, source_ids, examples):
    """RefinerData of `examples`: the token ids int [N, h, w] decoded by the PatchVQ, changed on
    the cells whose id differs from `source_ids`, the examples' sources and targets."""
    from editmgt_jax.editing import images as imio
    from editmgt_jax.training.refiner_fit import RefinerData

    decoded = [
        imio.to_uint8(
            vq_model.apply({"params": vq_params}, ids[i : i + 256], method=vq_model.decode_ids)
        )
        for i in range(0, len(ids), 256)
    ]
    stride = vq_model.config.stride
    changed = np.repeat(np.repeat(np.asarray(ids != source_ids), stride, axis=1), stride, axis=2)
    return RefinerData(
        np.concatenate(decoded),
        np.stack([e.source for e in examples]),
        np.stack([e.target for e in examples]),
        changed,
    )


def _pairs(vq_model, vq_params, examples):
    """RefinerData of examples: the target's codes decoded, the changed cells' pixels."""
    encode = _encoder(vq_model, vq_params)
    ids, source_ids = [], []
    for start in range(0, len(examples), 256):
        chunk = examples[start : start + 256]
        ids.append(np.asarray(encode(np.stack([e.target for e in chunk]))))
        source_ids.append(np.asarray(encode(np.stack([e.source for e in chunk]))))
    return _decoded_pairs(
        vq_model, vq_params, np.concatenate(ids), np.concatenate(source_ids), examples
    )


def _edit_examples(editor, examples, batch_size: int, what: str) -> list:
    """`editor`'s edits (its pipeline defaults) of the synthetic `examples`, with a progress bar."""
    with tqdm(total=len(examples), desc=f"model edits ({what})", leave=False) as bar:
        return editor.edit(
            [e.source for e in examples],
            [e.instruction for e in examples],
            batch_size=batch_size,
            progress=bar.update,
        )


def _model_pairs(editor, plain, params, examples, batch_size: int):
    """RefinerData of `editor`'s own edits of `examples` (the bundle's pipeline defaults): its
    tokens decoded by the plain PatchVQ `plain`, changed where a token differs from the source's."""
    results = _edit_examples(editor, examples, batch_size, "pairs")
    tokens = np.stack([r.tokens for r in results])
    source_tokens = np.stack([r.source_tokens for r in results])
    return _decoded_pairs(plain, params, tokens, source_tokens, examples)


def _clean_edits(editor, examples, batch_size: int) -> dict:
    """Per category and overall, the share of `editor`'s edits of `examples` (its pipeline
    defaults) that are clean (`metrics.edit_clean` against the example's mask)."""
    from editmgt_jax.evaluation import metrics
    from editmgt_jax.evaluation.edit_eval import category_means

    results = _edit_examples(editor, examples, batch_size, "judged")
    values = [
        float(metrics.edit_clean(e.source, e.target, r.image, np.asarray(e.mask) > 0))
        for e, r in zip(examples, results, strict=True)
    ]
    return dict(category_means(examples, values), overall=float(np.mean(values)))


def _clean_ceiling(reconstruct_edit, examples) -> dict:
    """Per category and overall, the share of `examples` whose target, decoded as an edit by
    `reconstruct_edit(sources, targets)`, is clean (`edit_eval.vq_ceiling`)."""
    from editmgt_jax.evaluation import metrics
    from editmgt_jax.evaluation.edit_eval import category_means, vq_ceiling

    values = vq_ceiling(examples, None, judge=metrics.edit_clean, reconstruct_edit=reconstruct_edit)
    return dict(category_means(examples, values), overall=float(np.mean(values)))


def fit(config, out: str) -> dict:
    import jax

    from data_pipelines.synthetic.generate import make_example
    from editmgt_jax import paths
    from editmgt_jax.checkpoint.bundle import is_bundle
    from editmgt_jax.checkpoint.convert.vq import load_vq
    from editmgt_jax.editing import images as imio
    from editmgt_jax.editor import Editor
    from editmgt_jax.models.patch_vq import PatchVQ
    from editmgt_jax.models.source_refiner import SourceRefiner
    from editmgt_jax.models.tokenizer import decode_edit
    from editmgt_jax.training.refiner_fit import fit_refiner

    if not config.vq:
        raise ValueError("config.vq is required: a bundle with a PatchVQ, or a PatchVQ folder")
    if paths.exists(out):
        raise FileExistsError(f"--out {out!r} exists; choose a new folder")
    if config.pairs not in ("target", "model"):
        raise ValueError(f"config.pairs must be 'target' or 'model', got {config.pairs!r}")
    model, params = load_vq(config.vq)
    if not isinstance(model, PatchVQ):
        raise ValueError(f"config.vq={config.vq!r} holds a {type(model).__name__}, not a PatchVQ")
    params = {"codebook": params["codebook"]}  # a refiner already there is refitted
    if config.get("refiner_from"):
        refined_model, refined, report = _copied_refiner(config.refiner_from, model, params)
        _write(config.vq, out, refined_model, refined, report)
        return report
    editor = Editor.from_bundle(config.vq) if is_bundle(config.vq) else None
    if config.pairs == "model" and editor is None:
        raise ValueError(
            f"config.pairs='model' needs a bundle (a transformer); {config.vq!r} is not"
        )
    plain = PatchVQ(dataclasses.replace(model.config, refiner_width=0))
    size = config.image_size
    pairs_seed = config.synthetic_seed if config.pairs == "target" else config.model_pairs_seed
    train = [
        make_example(pairs_seed, i, size, "train")
        for i in tqdm(range(config.num_examples), desc="train world", leave=False)
    ]
    heldout = [
        make_example(config.eval_seed, i, size, "heldout")
        for i in tqdm(range(config.eval_examples), desc="tuning split", leave=False)
    ]
    bar = tqdm(total=config.steps, desc="refiner")
    fitted, losses = fit_refiner(
        SourceRefiner(config.width, config.depth),
        (
            _pairs(plain, params, train)
            if config.pairs == "target"
            else _model_pairs(editor, plain, params, train, config.edit_batch_size)
        ),
        jax.random.key(config.seed),
        config.steps,
        config.batch_size,
        config.learning_rate,
        progress=lambda i, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.4f}")),
    )
    bar.close()
    refined_model = PatchVQ(
        dataclasses.replace(model.config, refiner_width=config.width, refiner_depth=config.depth)
    )
    refined = dict(params, refiner=fitted["params"])

    def rebuild(vq, vq_params):
        fn = jax.jit(lambda p, t, s, si: decode_edit(vq, p, t, s, si))
        encode = _encoder(vq, vq_params)

        def run(sources, targets):
            image = fn(vq_params, encode(targets), imio.to_float(sources), encode(sources))
            return imio.to_uint8(image)

        return run

    report = dict(
        vq=config.vq,
        pairs=config.pairs,
        pairs_seed=pairs_seed,
        width=config.width,
        depth=config.depth,
        steps=config.steps,
        train_examples=config.num_examples,
        final_loss=float(np.mean(losses[-50:])),
        eval=dict(seed=config.eval_seed, num=config.eval_examples),
        clean_ceiling_before=_clean_ceiling(rebuild(plain, params), heldout),
        clean_ceiling_after=_clean_ceiling(rebuild(refined_model, refined), heldout),
    )
    if editor is not None:
        after = _with_vq(editor, refined_model.config.to_diffusers(), refined)
        report["clean_edits_before"] = _clean_edits(editor, heldout, config.edit_batch_size)
        report["clean_edits_after"] = _clean_edits(after, heldout, config.edit_batch_size)
    _write(config.vq, out, refined_model, refined, report)
    return report


def _with_vq(editor, vq_config: dict, vq_params: dict):
    """An Editor with `editor`'s transformer and text encoder and the VQ `vq_config` /
    `vq_params` instead of its own."""
    from editmgt_jax.editor import Editor

    bundle = dataclasses.replace(editor.bundle, vq_config=vq_config, vq_params=vq_params)
    return Editor(bundle, text_encoder=editor.text_encoder)


def _copied_refiner(path: str, model, params: dict):
    """(PatchVQ, params, report) with the refiner of the PatchVQ at `path` on `params`' codebook."""
    from editmgt_jax.checkpoint.bundle import is_bundle, read_manifest
    from editmgt_jax.checkpoint.convert.vq import load_vq

    source_model, source_params = load_vq(path)
    if not getattr(source_model.config, "refiner_width", 0):
        raise ValueError(f"refiner_from={path!r} has no refiner")
    if not np.array_equal(np.asarray(source_params["codebook"]), np.asarray(params["codebook"])):
        raise ValueError(f"refiner_from={path!r} was fitted on another codebook")
    if is_bundle(path):
        report = read_manifest(path)["metadata"].get("refiner_fit", {})
    else:
        with open(os.path.join(path, "fit.json")) as f:
            report = json.load(f)
    refined = dict(params, refiner=source_params["refiner"])
    return source_model, refined, dict(report, copied_from=path)


def _write(vq_path: str, out: str, refined_model, refined: dict, report: dict) -> None:
    """`out`: the bundle at `vq_path` with the refined VQ, or a VQ folder (+ fit.json)."""
    import jax

    from editmgt_jax.checkpoint.bundle import is_bundle, load_bundle, save_bundle
    from editmgt_jax.checkpoint.convert.vq import save_vq

    if is_bundle(vq_path):
        bundle = load_bundle(vq_path)
        save_bundle(
            out,
            dataclasses.replace(
                bundle,
                vq_config=refined_model.config.to_diffusers(),
                vq_params=jax.device_get(refined),
                metadata=dict(bundle.metadata, refiner_fit=report),
                path=None,
            ),
        )
    else:
        from editmgt_jax.atomic import atomic_path

        save_vq(out, refined_model, refined)
        with atomic_path(os.path.join(out, "fit.json")) as path, open(path, "w") as f:
            json.dump(report, f, indent=2)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    print(json.dumps(fit(FLAGS.config, FLAGS.out)))


def run() -> None:
    """The console script (pyproject.toml): the same absl main as `python -m`."""
    define_flags()
    cli.run_main(main)


if __name__ == "__main__":
    run()
