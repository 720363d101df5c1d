r"""Sweeps a bundle's sampler settings on a tuning split of the synthetic world; prints JSON lines.

The embedded default model's pipeline defaults (region-hold lambda, score rescaling, sampling
temperature) are chosen here, on a world seed that neither training (20261201) nor the final
evaluation uses; the final figures come from `launch.eval` on yet another seed. One line per
setting: overall success and PSNR outside the edit, and success per category.

    python -m benchmarks.tune_pipeline --checkpoint workdirs/default_stage3_bundle \
        --lambdas 0,0.1,0.2,0.3 --rescales minmax,max --temperatures 0 --tolerances 0,16 \
        --out tuning.json
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from editmgt_jax.atomic import atomic_path

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("checkpoint", None, "Bundle folder.")
    flags.DEFINE_integer("seed", 31337, "World seed of the tuning split.")
    flags.DEFINE_integer("num", 70, "Edits (categories cycle).", lower_bound=1)
    flags.DEFINE_list("lambdas", ["0", "0.1", "0.2", "0.3"], "Region-hold thresholds.")
    flags.DEFINE_list("rescales", ["minmax", "max"], "Score rescalings.")
    flags.DEFINE_list("temperatures", ["0"], "Sampling temperatures.")
    flags.DEFINE_list("tolerances", ["0"], "Paste-back pixel tolerances.")
    flags.DEFINE_float("guidance", None, "CFG scale (default: the bundle's).")
    flags.DEFINE_integer("steps", None, "Decoding steps (default: the bundle's).")
    flags.DEFINE_string("out", None, "Also write every line into this JSON file (atomically).")
    flags.mark_flags_as_required(["checkpoint"])


def sweep(
    checkpoint: str,
    *,
    seed: int,
    num: int,
    lambdas: list[float],
    rescales: list[str],
    temperatures: list[float],
    tolerances: tuple[float, ...] = (0.0,),
    guidance: float | None = None,
    steps: int | None = None,
) -> list[dict]:
    """One result per (temperature, tolerance, rescale, lambda); lambda 0 is run once per
    (temperature, tolerance)."""
    from editmgt_jax.editor import Editor
    from editmgt_jax.evaluation import edit_eval
    from launch.eval import make_examples, run_edits

    editor = Editor.from_bundle(checkpoint)
    examples = make_examples(seed, num, int(editor.pipeline["resolution"]))
    guidance = float(editor.pipeline["guidance"] if guidance is None else guidance)
    results = []
    settings = [(t, tol) for t in temperatures for tol in tolerances]
    for temperature, tolerance in settings:
        common = dict(
            seeds=0,
            steps=steps,
            guidance=guidance,
            sample_temperature=temperature,
            paste_back=True,
            paste_back_tolerance=tolerance,
            batch_size=16,
        )
        free = run_edits(editor, examples, 0.0, **common)
        for rescale in rescales:
            editor.pipeline["score_rescale"] = rescale
            for lam in lambdas:
                held = free if lam == 0 else run_edits(editor, examples, lam, **common)
                records = [
                    edit_eval.score_edit(e, h, f, lam)
                    for e, h, f in zip(examples, held, free, strict=True)
                ]
                summary = edit_eval.summarize(records)
                row = dict(
                    hold_threshold=lam,
                    score_rescale=rescale,
                    sample_temperature=temperature,
                    paste_back_tolerance=tolerance,
                    guidance=guidance,
                    steps=int(steps or editor.pipeline["steps"]),
                    success=summary["overall"]["success"],
                    psnr_outside=summary["overall"]["psnr_outside"],
                    per_category={
                        c: dict(success=round(b["success"], 3), psnr_outside=b["psnr_outside"])
                        for c, b in summary["per_category"].items()
                    },
                )
                print(json.dumps(row), flush=True)
                results.append(row)
    return results


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    results = sweep(
        FLAGS.checkpoint,
        seed=FLAGS.seed,
        num=FLAGS.num,
        lambdas=[float(x) for x in FLAGS.lambdas],
        rescales=list(FLAGS.rescales),
        temperatures=[float(x) for x in FLAGS.temperatures],
        tolerances=[float(x) for x in FLAGS.tolerances],
        guidance=FLAGS.guidance,
        steps=FLAGS.steps,
    )
    if FLAGS.out:
        report = dict(
            checkpoint=os.path.abspath(FLAGS.checkpoint),
            split=dict(seed=FLAGS.seed, num=FLAGS.num, phrasings="heldout"),
            results=results,
        )
        with atomic_path(FLAGS.out) as path, open(path, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    define_flags()
    app.run(main)
