"""The Emu Edit test set (Sheynin et al., 2023; facebook/emu_edit_test_set) from its HF parquet
release, and its metrics.

Layout: `*.parquet` files with `instruction`, `image` (the input; image cell), `task`, `split`,
`idx`, `hash`, `input_caption`, `output_caption`; there is no ground-truth output. An example's
key is `<split>_<idx>` (`idx` alone when a row has no split), unique across the validation and
test splits.

Metrics (the Emu Edit paper's, between the input and the edit; Meta released no evaluator
code and third-party re-implementations disagree, so we chose (`protocol`): CLIP-dir as
InstructPix2Pix defines it, the directional similarity the Emu Edit paper cites
(`benchmark_metrics.clip_direction_similarity`: unit-normalised features, input / output
captions), the others with MagicBrush's evaluator functions and preprocessing):
CLIP-img (cosine of the input's and the edit's CLIP image embeddings), CLIP-out (cosine of the
edit's image embedding and the output caption's text embedding), L1 (`l1_distance` of the edit
against the input) and DINO (cosine of their DINO embeddings).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np

from editmgt_jax.evaluation import benchmark_metrics as bm
from editmgt_jax.evaluation.benchmarks import records
from editmgt_jax.evaluation.benchmarks.records import BadRow, Example

SUITE = "emu_edit"
SETTINGS = ("edited",)
COLUMNS = ("instruction", "image", "task", "idx", "input_caption", "output_caption")
OPTIONAL_COLUMNS = ("split", "hash")
METRICS = ("clip_dir", "clip_img", "clip_out", "l1", "dino")


class EmuEditReader(records.Reader):
    """Examples of an Emu Edit parquet folder; `split` keeps only rows of that split."""

    what = "Emu Edit"

    def __init__(self, data: str, split: str | None = None):
        super().__init__()
        self.paths = records.find_parquet_files(data, self.what)
        self.columns = {}
        for path in self.paths:
            names = records.check_columns(path, COLUMNS, self.what)
            self.columns[path] = [*COLUMNS, *(c for c in OPTIONAL_COLUMNS if c in names)]
        self.split = split
        self.total = records.count_rows(self.paths)

    def __iter__(self) -> Iterator[Example]:
        seen: set[str] = set()
        for path in self.paths:
            for row in records.parquet_rows(path, self.columns[path]):
                try:
                    split = str(row.get("split") or "").strip()
                    if self.split is not None and split != self.split:
                        continue
                    example = self._example(row, split, os.path.dirname(path))
                    if example.key in seen:
                        raise BadRow("duplicate_key", f"key {example.key!r} repeats")
                    seen.add(example.key)
                    yield example
                except BadRow as err:
                    self.skip(err)

    def _example(self, row: dict, split: str, folder: str) -> Example:
        idx = row.get("idx")
        if idx is None or not str(idx).strip():
            raise BadRow("missing_idx", "idx is empty")
        key = f"{split}_{idx}" if split else str(idx)
        texts = dict(
            input_caption=records.text_cell(row, "input_caption"),
            output_caption=records.text_cell(row, "output_caption"),
        )
        return Example(
            key=key,
            instruction=records.text_cell(row, "instruction"),
            source=records.image_cell(row["image"], "image", folder),
            category=records.text_cell(row, "task", required=False) or "unknown",
            texts=texts,
            meta=dict(idx=idx, split=split, hash=row.get("hash")),
        )


def score(examples: Sequence[Example], inputs, edits, scorer) -> list[dict]:
    """Metrics of each edit against its input (module docstring)."""
    rows = [dict(l1=bm.l1_distance(edit, src)) for edit, src in zip(edits, inputs, strict=True)]
    clip_src, clip_edit = scorer.clip_images(inputs), scorer.clip_images(edits)
    if clip_src is not None:
        for row, a, b in zip(rows, clip_src, clip_edit, strict=True):
            row["clip_img"] = bm.cosine_similarity(a, b)
        text_in = scorer.clip_texts([e.texts["input_caption"] for e in examples])
        text_out = scorer.clip_texts([e.texts["output_caption"] for e in examples])
        if text_in is not None:
            for row, a, b, t_in, t_out in zip(
                rows, clip_src, clip_edit, text_in, text_out, strict=True
            ):
                row["clip_dir"] = bm.clip_direction_similarity(a, b, t_in, t_out)
                row["clip_out"] = bm.cosine_similarity(b, t_out)
    dino_src, dino_edit = scorer.dino_images(inputs), scorer.dino_images(edits)
    if dino_src is not None:
        for row, a, b in zip(rows, dino_src, dino_edit, strict=True):
            row["dino"] = bm.cosine_similarity(a, b)
    return rows


def example_images(example: Example) -> dict[str, np.ndarray]:
    return {}


def protocol(scorer) -> dict:
    """What metrics.json's numbers follow (metrics.json `protocol`)."""
    return dict(
        follows=(
            "the Emu Edit paper (Sheynin et al., 2023, section 5); Meta released no evaluator, so "
            "this is our choice among disagreeing third-party protocols"
        ),
        clip_dir=(
            "InstructPix2Pix metrics/clip_similarity.py: image and text features unit-normalised, "
            "then cos(image_edit - image_input, text_output - text_input) with the row's "
            "input_caption / output_caption"
        ),
        clip_dir_normalised=True,
        clip_img_clip_out_dino_l1=(
            "MagicBrush evaluation/image_eval.py functions (cosine of raw embeddings, L1 on [0, 1] "
            "with the edit bicubic-resized to the input) against the input image"
        ),
        preprocessing=(
            "OpenAI CLIP transform (bicubic shorter side, rounded centre crop); DINO: Resize 256, "
            "CenterCrop 224 (MagicBrush's); InstructPix2Pix's own CLIP-dir resizes the whole image "
            "to 224 x 224 (no crop): we use the CLIP transform for every CLIP metric"
        ),
        jpeg_round_trip=False,
        backbones="the --clip / --dino folders (settings.backbones); the paper does not pin them",
        deviations=[
            "no official evaluator: numbers are comparable only with papers that state the same "
            "choices (normalised CLIP-dir, MagicBrush preprocessing, the same backbones)"
        ],
    )
