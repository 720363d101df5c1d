"""Edit images with an instruction: one image, a folder or glob, or a JSONL of jobs.

    python -m launch.edit --image in.png --instruction "make the red ball blue" --out out.png
    python -m launch.edit --image "photos/*.jpg" --instruction "make it winter" --out edited/ \
        --batch_size 4 --save_heatmap
    python -m launch.edit --image in.png --mask mask.png --paste_back --instruction "add a hat" \
        --out out.png --hold_threshold 0.3 --query "hat" --dump_tokens tokens.npz
    python -m launch.edit --jobs jobs.jsonl --out edited/   # {"image", "instruction", "out"[, "mask"]}

`--checkpoint` is a bundle folder (`launch.init_checkpoint` writes a random one, `launch.convert`
converts official weights); by default the embedded model at editmgt_jax/assets/default_model.
Unset sampler flags take the bundle's pipeline defaults. A bad job (unreadable or non-image file,
too many pixels, missing mask, empty instruction, bad output name) is reported and the others
still run; outputs are written atomically. A progress bar counts finished images; there is none
per step, because the whole decode loop is one jitted call (per-step progress would need host
callbacks inside it).

JSONL jobs: relative "image" / "mask" paths are relative to the JSONL file's folder, relative
"out" paths to --out (else to the JSONL file's folder). Optional per-job keys: "mask", "query",
"seed", "guidance", "hold_threshold".

Outputs: the edited image at the input's original size; with --save_heatmap also
<out>_heatmap.png (region scores) and <out>_hold.png (white = token held from the source);
with --dump_tokens an npz of source_tokens, tokens, hold_mask (True where the final token came
from a hold), scores and edit_mask [N, h, w] (keys suffixed _<i> per job when the grids differ)
plus `outputs` (the output paths, in the same order).

Prints one JSON line: edited, failed, seconds, failures (job and error), warnings.
"""

from __future__ import annotations

import dataclasses
import glob
import io
import json
import logging
import math
import os
import sys
import time
from typing import Any

import numpy as np
from absl import app, flags

from editmgt_jax.assets import DEFAULT_MODEL
from editmgt_jax.atomic import atomic_path
from editmgt_jax.editing import images as imio
from launch import cli

DEFAULT_CHECKPOINT = DEFAULT_MODEL
INPUT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
# Jobs prepared (images in memory) at a time, in units of batch_size.
BLOCK_BATCHES = 8

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the command-line flags (only when run as a script, so that importing this module
    from tests or other scripts defines none)."""
    flags.DEFINE_string("image", None, "Input image: a file, a folder or a glob.")
    flags.DEFINE_string("instruction", None, "The edit instruction (with --image).")
    flags.DEFINE_string("jobs", None, "JSONL of {image, instruction, out[, mask]} jobs.")
    flags.DEFINE_string("out", None, "Output file (one image) or folder.")
    flags.DEFINE_string("checkpoint", None, "Bundle folder (default: embedded model).")
    flags.DEFINE_integer("steps", None, "Decoding steps (default: the bundle's).")
    flags.DEFINE_float("guidance", None, "Classifier-free guidance scale.")
    flags.DEFINE_float("reference_strength", None, "Source attention strength s > 0.")
    flags.DEFINE_float("hold_threshold", None, "Region-hold lambda in [0, 1]; 0 = off.")
    flags.DEFINE_string("query", None, "Phrase of the instruction that localizes the edit.")
    flags.DEFINE_string("mask", None, "Mask PNG (white = may change), with --image.")
    flags.DEFINE_bool(
        "paste_back",
        None,
        "Copy the original pixels back outside the mask and on held or unchanged tokens "
        "(default: the checkpoint's pipeline setting; on for the default model).",
    )
    flags.DEFINE_float(
        "paste_back_tolerance",
        None,
        "With --paste_back, also keep the original pixels where the edited image is within this "
        "many uint8 levels of the original, pixel by pixel (0: only held / unchanged tokens; "
        "default: the checkpoint's pipeline setting).",
    )
    flags.DEFINE_float(
        "sample_temperature",
        None,
        "Softmax temperature of the token samples; 0 takes the most likely code (default: the "
        "checkpoint's pipeline setting; 1 as official).",
    )
    flags.DEFINE_float(
        "source_logit_bias",
        None,
        "Margin added to the source token's logit: a code must beat the source's by this much "
        "to replace it (default: the checkpoint's pipeline setting; 0 as official).",
    )
    flags.DEFINE_float(
        "region_source_bias",
        None,
        "A further margin times (1 - region score): a soft region-hold (default: the "
        "checkpoint's pipeline setting; 0 as official).",
    )
    flags.DEFINE_integer("seed", 0, "PRNG seed of every edit (a job's 'seed' overrides it).")
    flags.DEFINE_integer("batch_size", 4, "Edits per sampler call.")
    flags.DEFINE_integer("resolution", None, "Longer side in pixels the model sees.")
    flags.DEFINE_bool("save_heatmap", False, "Write <out>_heatmap.png and <out>_hold.png.")
    flags.DEFINE_string("dump_tokens", None, "Write the tokens and masks to this npz.")
    flags.DEFINE_string("dtype", None, "Transformer compute dtype, e.g. bfloat16.")
    flags.DEFINE_integer("max_pixels", imio.DEFAULT_MAX_PIXELS, "Largest input.")


@dataclasses.dataclass
class Job:
    """One edit to run: input paths, instruction, output path and per-job settings."""

    image: str
    instruction: str
    out: str
    name: str  # for messages: the image path, or "jobs.jsonl line N"
    mask: str | None = None
    query: str | None = None
    seed: int | None = None
    guidance: float | None = None
    hold_threshold: float | None = None


@dataclasses.dataclass
class Options:
    """Run-wide settings (None: the bundle's pipeline default)."""

    steps: int | None = None
    guidance: float | None = None
    reference_strength: float | None = None
    hold_threshold: float | None = None
    query: str | None = None
    paste_back: bool | None = None
    paste_back_tolerance: float | None = None
    sample_temperature: float | None = None
    source_logit_bias: float | None = None
    region_source_bias: float | None = None
    seed: int = 0
    batch_size: int = 4
    resolution: int | None = None
    save_heatmap: bool = False
    dump_tokens: str | None = None
    progress: bool = True

    def check(self) -> None:
        """Raises ValueError naming a bad value."""
        if self.hold_threshold is not None and not 0.0 <= self.hold_threshold <= 1.0:
            raise ValueError(
                f"--hold_threshold (lambda) must be in [0, 1], got {self.hold_threshold}"
            )
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {self.steps}")
        if self.guidance is not None and not self.guidance >= 0:
            raise ValueError(f"--guidance must be >= 0, got {self.guidance}")
        if self.reference_strength is not None and not self.reference_strength > 0:
            raise ValueError(f"--reference_strength must be > 0, got {self.reference_strength}")
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {self.batch_size}")
        if self.sample_temperature is not None and not self.sample_temperature >= 0:
            raise ValueError(f"--sample_temperature must be >= 0, got {self.sample_temperature}")
        for name in ("source_logit_bias", "region_source_bias"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"--{name} must be finite, got {value}")
        if self.query is not None and not self.query.strip():
            raise ValueError("--query is empty")


def expand_images(pattern: str) -> tuple[list[str], bool]:
    """(image paths, single): a folder's images (sorted), a glob's matches, or the one file."""
    if os.path.isdir(pattern):
        names = sorted(os.listdir(pattern))
        paths = [
            os.path.join(pattern, n)
            for n in names
            if os.path.splitext(n)[1].lower() in INPUT_EXTENSIONS
        ]
        if not paths:
            raise ValueError(f"Folder {pattern!r} holds no images ({', '.join(INPUT_EXTENSIONS)})")
        return paths, False
    if glob.has_magic(pattern):
        paths = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
        if not paths:
            raise ValueError(f"No file matches {pattern!r}")
        return paths, False
    return [pattern], True


def _output_name(image: str, used: set[str]) -> str:
    stem, ext = os.path.splitext(os.path.basename(image))
    name = stem + ".png"
    if name in used:
        name = f"{stem}_{ext.lstrip('.')}.png"
    used.add(name)
    return name


def image_jobs(image: str, instruction: str, out: str, mask: str | None = None) -> list[Job]:
    """Jobs for --image (file, folder or glob) with one instruction; see the module docstring."""
    if instruction is None or not instruction.strip():
        raise ValueError(f"--instruction is empty ({instruction!r}); say what to edit in {image!r}")
    paths, single = expand_images(image)
    is_file_out = os.path.splitext(out)[1].lower() in imio.FORMATS
    if single and is_file_out:
        return [Job(image=paths[0], instruction=instruction, out=out, name=paths[0], mask=mask)]
    if is_file_out:
        raise ValueError(
            f"--out {out!r} is a file name but --image {image!r} matches several images"
        )
    used: set[str] = set()
    return [
        Job(
            image=p,
            instruction=instruction,
            out=os.path.join(out, _output_name(p, used)),
            name=p,
            mask=mask,
        )
        for p in paths
    ]


def read_jobs(path: str, out: str | None = None) -> tuple[list[Job], list[dict[str, str]]]:
    """(jobs, failures) from a JSONL file; a bad line is a failure naming it, not an error."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Jobs file {path!r} does not exist")
    base = os.path.dirname(os.path.abspath(path))
    jobs, failures = [], []
    with open(path) as f:
        lines = f.read().splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        name = f"{path} line {number}"
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"expected a JSON object, got {type(record).__name__}")
            missing = [k for k in ("image", "instruction", "out") if k not in record]
            if missing:
                raise ValueError(f"missing key(s) {missing}")
            instruction = record["instruction"]
            if not isinstance(instruction, str) or not instruction.strip():
                raise ValueError(f"the instruction is empty ({instruction!r})")
            job_out = os.path.join(out if out else base, record["out"])
            imio.output_format(job_out)
            mask = record.get("mask")
            jobs.append(
                Job(
                    image=os.path.join(base, record["image"]),
                    instruction=instruction,
                    out=job_out,
                    name=f"{name} ({record['image']})",
                    mask=None if mask is None else os.path.join(base, mask),
                    query=record.get("query"),
                    seed=record.get("seed"),
                    guidance=record.get("guidance"),
                    hold_threshold=record.get("hold_threshold"),
                )
            )
        except (ValueError, TypeError) as e:
            failures.append(dict(job=name, error=str(e)))
    return jobs, failures


def _side_path(out: str, suffix: str) -> str:
    return os.path.splitext(out)[0] + suffix + ".png"


def _dump(path: str, results: list, outputs: list[str]) -> None:
    arrays: dict[str, Any] = {"outputs": np.asarray(outputs, dtype=str)}
    per_job = {
        "source_tokens": [r.source_tokens for r in results],
        "tokens": [r.tokens for r in results],
        "hold_mask": [r.hold_mask for r in results],
        "scores": [r.heatmap for r in results],
        "edit_mask": [r.edit_mask for r in results],
    }
    shapes = {r.tokens.shape for r in results}
    for key, values in per_job.items():
        if len(shapes) <= 1:
            arrays[key] = np.stack(values) if values else np.zeros((0, 0, 0))
        else:
            arrays.update({f"{key}_{i}": v for i, v in enumerate(values)})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(buffer.getvalue())


def run_jobs(editor, jobs: list[Job], options: Options) -> dict[str, Any]:
    """Runs `jobs` with `editor`; writes outputs; returns the summary (edited, failed, ...)."""
    from tqdm import tqdm

    options.check()
    start = time.perf_counter()
    failures: list[dict[str, str]] = []
    warnings: list[str] = []
    dumped, dumped_outs = [], []
    edited = 0
    block = max(options.batch_size * BLOCK_BATCHES, 1)
    bar = tqdm(total=len(jobs), unit="image", disable=not options.progress, file=sys.stderr)
    for first in range(0, len(jobs), block):
        prepared, prepared_jobs = [], []
        for job in jobs[first : first + block]:
            try:
                hold = (
                    job.hold_threshold if job.hold_threshold is not None else options.hold_threshold
                )
                request = editor.prepare(
                    job.image,
                    job.instruction,
                    mask=job.mask,
                    query=job.query if job.query is not None else options.query,
                    seed=job.seed if job.seed is not None else options.seed,
                    guidance=job.guidance if job.guidance is not None else options.guidance,
                    hold_threshold=hold,
                    name=job.name,
                )
                imio.output_format(job.out)
            except (ValueError, TypeError, OSError) as e:
                failures.append(dict(job=job.name, error=str(e)))
                bar.update(1)
                continue
            prepared.append(request)
            prepared_jobs.append(job)
        results = editor.run(
            prepared,
            steps=options.steps,
            reference_strength=options.reference_strength,
            paste_back=options.paste_back,
            paste_back_tolerance=options.paste_back_tolerance,
            sample_temperature=options.sample_temperature,
            source_logit_bias=options.source_logit_bias,
            region_source_bias=options.region_source_bias,
            batch_size=options.batch_size,
            resolution=options.resolution,
            progress=bar.update,
        )
        for job, result in zip(prepared_jobs, results, strict=True):
            try:
                imio.save_image(job.out, result.image)
                if options.save_heatmap:
                    imio.save_image(_side_path(job.out, "_heatmap"), result.heatmap_image())
                    imio.save_image(_side_path(job.out, "_hold"), result.hold_image())
            except (ValueError, OSError) as e:
                failures.append(dict(job=job.name, error=f"cannot write {job.out!r}: {e}"))
                continue
            edited += 1
            warnings.extend(f"{job.name}: {w}" for w in result.warnings)
            if options.dump_tokens:
                dumped.append(result)
                dumped_outs.append(job.out)
    bar.close()
    if options.dump_tokens:
        _dump(options.dump_tokens, dumped, dumped_outs)
    return dict(
        edited=edited,
        failed=len(failures),
        seconds=round(time.perf_counter() - start, 3),
        failures=failures,
        warnings=warnings,
    )


def _options_from_flags() -> Options:
    return Options(
        steps=FLAGS.steps,
        guidance=FLAGS.guidance,
        reference_strength=FLAGS.reference_strength,
        hold_threshold=FLAGS.hold_threshold,
        query=FLAGS.query,
        paste_back=FLAGS.paste_back,
        paste_back_tolerance=FLAGS.paste_back_tolerance,
        sample_temperature=FLAGS.sample_temperature,
        source_logit_bias=FLAGS.source_logit_bias,
        region_source_bias=FLAGS.region_source_bias,
        seed=FLAGS.seed,
        batch_size=FLAGS.batch_size,
        resolution=FLAGS.resolution,
        save_heatmap=FLAGS.save_heatmap,
        dump_tokens=FLAGS.dump_tokens,
    )


def resolve_checkpoint(path: str | None) -> str:
    """--checkpoint, or the embedded default model; a clear error when neither exists."""
    if path is None:
        if not os.path.isdir(DEFAULT_CHECKPOINT):
            raise app.UsageError(
                f"No --checkpoint given and the embedded default model ({DEFAULT_CHECKPOINT}) is "
                "not there yet. Pass --checkpoint BUNDLE, or make a random one for a smoke run: "
                "python -m launch.init_checkpoint --config configs/smoke.py --out /tmp/smoke_bundle"
            )
        return DEFAULT_CHECKPOINT
    path = cli.local_checkpoint(path)  # a gs:// bundle: its cached local copy
    if not os.path.isdir(path):
        raise app.UsageError(f"--checkpoint {path!r} does not exist")
    return path


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    start = time.perf_counter()
    options = _options_from_flags()
    try:
        options.check()
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    if (FLAGS.image is None) == (FLAGS.jobs is None):
        raise app.UsageError("Give exactly one of --image (with --instruction) or --jobs")
    if FLAGS.jobs is not None and (FLAGS.mask is not None or FLAGS.instruction is not None):
        raise app.UsageError("--mask and --instruction go with --image; jobs carry their own")
    failures: list[dict[str, str]] = []
    try:
        if FLAGS.image is not None:
            if FLAGS.out is None:
                raise ValueError("--out is required with --image")
            jobs = image_jobs(FLAGS.image, FLAGS.instruction, FLAGS.out, FLAGS.mask)
        else:
            jobs, failures = read_jobs(FLAGS.jobs, FLAGS.out)
    except (ValueError, FileNotFoundError) as e:
        raise app.UsageError(str(e)) from e
    checkpoint = resolve_checkpoint(FLAGS.checkpoint)

    from editmgt_jax.editor import Editor

    try:
        editor = Editor.from_bundle(checkpoint, dtype=FLAGS.dtype, max_pixels=FLAGS.max_pixels)
    except (FileNotFoundError, ValueError) as e:
        raise app.UsageError(f"--checkpoint {checkpoint!r}: {e}") from e
    if editor.random_init:
        logging.warning(
            "%s holds randomly initialised weights: the edits will be noise", checkpoint
        )
    summary = run_jobs(editor, jobs, options)
    summary["failures"] = failures + summary["failures"]
    summary["failed"] = len(summary["failures"])
    summary["seconds"] = round(time.perf_counter() - start, 3)
    summary["checkpoint"] = checkpoint
    for failure in summary["failures"]:
        logging.error("%s: %s", failure["job"], failure["error"])
    print(json.dumps(summary))
    return 1 if summary["failed"] else 0


def run():
    """The console script (pyproject.toml): the same absl main as `python -m`."""
    define_flags()
    cli.run_main(main)


if __name__ == "__main__":
    run()
