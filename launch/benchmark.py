r"""Runs a standard editing benchmark on its released layout and reports its metrics.

    python -m launch.benchmark --suite magicbrush --data /data/MagicBrush --checkpoint CKPT \
        --out /tmp/mb --clip /models/clip-vit-base-patch32 --dino /models/dino-vits16
    python -m launch.benchmark --suite emu_edit --data /data/emu_edit_test_set --checkpoint CKPT \
        --out /tmp/emu --clip /models/clip-vit-base-patch32 --dino /models/dino-vits16 --emu_split test
    python -m launch.benchmark --suite pie_bench --data /data/PIE-Bench --checkpoint CKPT \
        --out /tmp/pie --clip /models/clip-vit-large-patch14 --dino /models/dino-vitb8
    python -m launch.benchmark --suite gedit --data /data/GEdit-Bench --checkpoint CKPT --out /tmp/gedit

Without --checkpoint it uses the embedded default model. --clip / --dino are local
transformers-layout folders (config.json + model.safetensors; CLIP-T and the other text-image
metrics need a full CLIPModel folder); a metric whose backbone is not given is absent from
metrics.json, with a note saying why. A rerun with the same --out reuses the edits already
written. Writes OUT/metrics.json, OUT/<setting>/{<key>.png, <key>.npz, records.jsonl,
figure.png} (see editmgt_jax.evaluation.benchmarks.harness) and prints a final JSON line.
metrics.json's `protocol` says which official definition each suite's numbers follow: by
default PIE-Bench scores edits after a JPEG quality-75 round trip, as its baselines were scored
(`--lossless` scores the PNG as written), and MagicBrush reads the hub's parquet or the test
zip's `edit_sessions.json` layout, whichever --data holds. See docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from editmgt_jax.assets import DEFAULT_MODEL
from launch import cli

FLAGS = flags.FLAGS
SUITES = ("magicbrush", "emu_edit", "pie_bench", "gedit")


def define_flags() -> None:
    flags.DEFINE_enum("suite", None, list(SUITES), "Benchmark suite.")
    flags.DEFINE_string("data", None, "The benchmark's released layout (folder).")
    flags.DEFINE_string("checkpoint", None, "Bundle folder (default: the embedded default model).")
    flags.DEFINE_string("out", None, "Output folder (a rerun resumes it).")
    flags.DEFINE_string(
        "clip", None, "CLIP folder (full CLIPModel, or CLIPVisionModelWithProjection)."
    )
    flags.DEFINE_string("dino", None, "DINO ViT (or DINOv2) folder.")
    flags.DEFINE_integer("limit", None, "Examples to run (MagicBrush: sessions).", lower_bound=1)
    flags.DEFINE_integer("steps", None, "Decoding steps (default: the bundle's).", lower_bound=1)
    flags.DEFINE_float("guidance", None, "CFG scale (default: the bundle's).")
    flags.DEFINE_float("hold_threshold", None, "Region-hold lambda (default: the bundle's).")
    flags.DEFINE_float(
        "reference_strength", None, "Source attention strength (default: the bundle's)."
    )
    flags.DEFINE_bool("paste_back", None, "Paste-back (default: the bundle's pipeline setting).")
    flags.DEFINE_integer(
        "resolution", None, "Longer bucket side in pixels (default: the bundle's)."
    )
    flags.DEFINE_integer("batch_size", 4, "Edits per sampler call.", lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Base PRNG seed (each example's seed also hashes its key).")
    flags.DEFINE_string("dtype", None, "Transformer compute dtype (e.g. bfloat16).")
    flags.DEFINE_enum("lpips", "alexnet", ["alexnet", "vgg16", "none"], "LPIPS net (PIE-Bench).")
    flags.DEFINE_bool(
        "lossless",
        False,
        "PIE-Bench: score the edit as written, without the JPEG quality-75 round trip its "
        "published baselines went through (not comparable with them).",
    )
    flags.DEFINE_bool(
        "structure_antialias",
        False,
        "PIE-Bench: antialias the structure-distance resize (torchvision >= 0.17) instead of "
        "torchvision 0.13.1's non-antialiased one.",
    )
    flags.DEFINE_float(
        "iou_threshold", 0.5, "Attention IoU: heatmap >= this is the predicted region."
    )
    flags.DEFINE_float(
        "changed_pixel_tolerance", 8.0, "A pixel changed when some channel moved more levels."
    )
    flags.DEFINE_string(
        "captions",
        None,
        "MagicBrush local captions JSON (default: local_descriptions.json or local_captions.json "
        "in --data).",
    )
    flags.DEFINE_list("magicbrush_settings", ["independent", "iterative"], "MagicBrush settings.")
    flags.DEFINE_string("emu_split", None, "Emu Edit: only this split (validation / test).")
    flags.DEFINE_list("pie_types", None, "PIE-Bench: only these editing type ids (0-9).")
    flags.DEFINE_enum("gedit_language", "en", ["en", "cn", "all"], "GEdit-Bench instructions.")
    flags.DEFINE_string("gedit_model_name", "editmgt_jax", "GEdit judge layout model folder.")
    flags.DEFINE_integer("figure_rows", 8, "Rows of each setting's figure.", lower_bound=0)
    flags.mark_flags_as_required(["suite", "data", "out"])


def run_benchmark(
    suite: str,
    data: str,
    out: str,
    checkpoint: str = DEFAULT_MODEL,
    *,
    clip: str | None = None,
    dino: str | None = None,
    limit: int | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    hold_threshold: float | None = None,
    reference_strength: float | None = None,
    paste_back: bool | None = None,
    resolution: int | None = None,
    batch_size: int = 4,
    seed: int = 0,
    dtype: str | None = None,
    lpips: str = "alexnet",
    lossless: bool = False,
    structure_antialias: bool = False,
    iou_threshold: float = 0.5,
    changed_pixel_tolerance: float = 8.0,
    captions: str | None = None,
    magicbrush_settings=("independent", "iterative"),
    emu_split: str | None = None,
    pie_types=None,
    gedit_language: str = "en",
    gedit_model_name: str = "editmgt_jax",
    figure_rows: int = 8,
    editor=None,
    backbones: dict | None = None,
) -> dict:
    """Runs one suite and writes OUT/metrics.json; returns its content. `editor` (an Editor of
    `checkpoint`) and `backbones` ({"clip": Backbone, "dino": Backbone}) may be passed in to
    reuse loaded models."""
    from editmgt_jax.editor import Editor
    from editmgt_jax.evaluation.backbones import load_backbone
    from editmgt_jax.evaluation.benchmarks import emu_edit, gedit, harness, pie_bench
    from editmgt_jax.evaluation.benchmarks.scoring import Scorer

    if suite not in SUITES:
        raise ValueError(f"Unknown suite {suite!r}; expected one of {SUITES}")
    if not os.path.exists(data):
        raise FileNotFoundError(f"--data {data!r} does not exist")
    editor = editor or Editor.from_bundle(checkpoint, dtype=dtype)
    pipeline = editor.pipeline
    pick = lambda value, key: pipeline[key] if value is None else value
    edit_settings = harness.EditSettings(
        checkpoint=os.path.abspath(checkpoint),
        steps=int(pick(steps, "steps")),
        guidance=float(pick(guidance, "guidance")),
        hold_threshold=float(pick(hold_threshold, "hold_threshold")),
        reference_strength=float(pick(reference_strength, "reference_strength")),
        paste_back=bool(pick(paste_back, "paste_back")),
        resolution=int(pick(resolution, "resolution")),
        seed=int(seed),
        dtype=dtype,
    )
    backbones = dict(backbones or {})
    for name, folder in (("clip", clip), ("dino", dino)):
        if folder is not None and name not in backbones:
            backbones[name] = load_backbone(folder)
    from editmgt_jax.evaluation.benchmark_metrics import PIE_JPEG_QUALITY

    jpeg_quality = None if lossless else PIE_JPEG_QUALITY
    scorer = Scorer(
        backbones.get("clip"),
        backbones.get("dino"),
        lpips,
        pie_jpeg_quality=jpeg_quality,
        structure_antialias=structure_antialias,
    )
    metric_settings = harness.MetricSettings(
        clip=None if clip is None else os.path.abspath(clip),
        dino=None if dino is None else os.path.abspath(dino),
        lpips=lpips,
        iou_threshold=float(iou_threshold),
        changed_pixel_tolerance=float(changed_pixel_tolerance),
        captions=None if captions is None else os.path.abspath(captions),
        pie_jpeg_quality=jpeg_quality,
        structure_antialias=bool(structure_antialias),
    )
    run = harness.BenchmarkRun(
        suite,
        out,
        editor,
        edit_settings,
        metric_settings,
        scorer,
        batch_size=batch_size,
        figure_rows=figure_rows,
        gedit_model_name=gedit_model_name,
    )
    run.check_resume()
    if suite == "magicbrush":
        result = harness.run_magicbrush(run, data, limit, captions, magicbrush_settings)
    elif suite == "emu_edit":
        reader = emu_edit.EmuEditReader(data, split=emu_split)
        result = harness.run_single(run, reader, limit, emu_split=emu_split)
    elif suite == "pie_bench":
        reader = pie_bench.PIEBenchReader(data, types=pie_types)
        result = harness.run_single(run, reader, limit, pie_types=pie_types)
    else:
        reader = gedit.GEditReader(data, language=gedit_language)
        result = harness.run_single(
            run, reader, limit, gedit_language=gedit_language, gedit_model_name=gedit_model_name
        )
    result = dict(result, data=os.path.abspath(data), random_init=editor.random_init)
    harness.write_json(os.path.join(out, harness.METRICS_FILE), result)
    return result


def summary_line(result: dict, out: str) -> dict:
    """The final JSON line: the overall metrics (per MagicBrush setting) and counts."""
    line = dict(suite=result["suite"], out=out)
    if result["suite"] == "magicbrush":
        for setting in ("independent", "iterative"):
            if setting in result:
                block = result[setting]
                line[setting] = dict(
                    overall=block["overall"], final_turn=block["final_turn"], **block["stats"]
                )
                line[f"{setting}_skipped"] = block["skipped"]
    else:
        line.update(overall=result["overall"], skipped=result["skipped"], **result["stats"])
    return line


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    checkpoint = cli.bundle_folder(FLAGS.checkpoint)
    try:
        result = _run_from_flags(checkpoint)
    except (FileNotFoundError, ValueError) as e:  # layout, key and settings errors included
        raise app.UsageError(str(e)) from e
    print(json.dumps(summary_line(result, FLAGS.out)))


def _run_from_flags(checkpoint: str) -> dict:
    return run_benchmark(
        FLAGS.suite,
        FLAGS.data,
        FLAGS.out,
        checkpoint,
        clip=FLAGS.clip,
        dino=FLAGS.dino,
        limit=FLAGS.limit,
        steps=FLAGS.steps,
        guidance=FLAGS.guidance,
        hold_threshold=FLAGS.hold_threshold,
        reference_strength=FLAGS.reference_strength,
        paste_back=FLAGS.paste_back,
        resolution=FLAGS.resolution,
        batch_size=FLAGS.batch_size,
        seed=FLAGS.seed,
        dtype=FLAGS.dtype,
        lpips=FLAGS.lpips,
        lossless=FLAGS.lossless,
        structure_antialias=FLAGS.structure_antialias,
        iou_threshold=FLAGS.iou_threshold,
        changed_pixel_tolerance=FLAGS.changed_pixel_tolerance,
        captions=FLAGS.captions,
        magicbrush_settings=FLAGS.magicbrush_settings,
        emu_split=FLAGS.emu_split,
        pie_types=FLAGS.pie_types,
        gedit_language=FLAGS.gedit_language,
        gedit_model_name=FLAGS.gedit_model_name,
        figure_rows=FLAGS.figure_rows,
    )


def run() -> None:
    """The console script (pyproject.toml): the same absl main as `python -m`."""
    define_flags()
    cli.run_main(main)


if __name__ == "__main__":
    run()
