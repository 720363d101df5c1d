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
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence

import numpy as np

from editmgt_jax.evaluation import benchmark_metrics as bm
from editmgt_jax.evaluation.benchmarks import records
from editmgt_jax.evaluation.benchmarks.records import BadRow, Example

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


def score(examples: Sequence[Example], inputs, edits, scorer) -> list[dict]:
    """PIE-Bench's metrics of each edit (module docstring)."""
    rows = []
    for example, src, edit in zip(examples, inputs, edits, strict=True):
        keep = 1.0 - example.mask.astype(np.float32)  # the unedited part
        row = {}
        if keep.sum() > 0:
            row.update(
                psnr_unedit_part=bm.pie_psnr(src, edit, keep),
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
