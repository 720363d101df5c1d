"""GEdit-Bench (Step1X-Edit; stepfun-ai/GEdit-Bench) from its HF parquet release.

Layout: `*.parquet` files with `key`, `task_type`, `instruction`, `instruction_language`,
`input_image` (image cell), and more (`input_image_raw`, `Intersection_exist`) that editing
does not need. Scores come from a VLM judge (VIEScore with GPT-4.1 in EditMGT's paper), which
needs the network and is not run here: the suite writes each edit, at the input's size, where
the judge scripts (Step1X-Edit's GEdit-Bench/run_gedit_score.py, EditMGT's
eval/geditbench/rate.py) look for it:

    <out>/gedit/<model_name>/fullset/<task_type>/<instruction_language>/<key>.png
    <out>/gedit/<model_name>/fullset/<task_type>/<instruction_language>/<key>_SRCIMG.png

(the second is the input image: Step1X-Edit's older `test_gedit_score.py` reads the source from
`<key>_SRCIMG.png` and skips every sample without it), so `--edited_images_dir <out>/gedit
--model_name <model_name>` (or `--save_path <out>/gedit --model_name <model_name>`) points the
judge at it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np

from editmgt_jax.evaluation.benchmarks import records
from editmgt_jax.evaluation.benchmarks.records import Example

SUITE = "gedit"
SETTINGS = ("edited",)
COLUMNS = ("key", "task_type", "instruction", "instruction_language", "input_image")
METRICS = ()
JUDGE_FOLDER = "gedit"
LANGUAGES = ("en", "cn", "all")


def judge_path(out: str, model_name: str, example: Example) -> str:
    """Where the judge scripts read this example's edit."""
    return os.path.join(
        out,
        JUDGE_FOLDER,
        model_name,
        "fullset",
        example.category,
        example.meta["instruction_language"],
        f"{example.meta['gedit_key']}.png",
    )


def source_path(out: str, model_name: str, example: Example) -> str:
    """Where `test_gedit_score.py` reads this example's input image (`<key>_SRCIMG.png`)."""
    return judge_path(out, model_name, example)[: -len(".png")] + "_SRCIMG.png"


class GEditReader(records.Reader):
    """Examples of a GEdit-Bench parquet folder in `language` ('en' as EditMGT's evaluation
    script, 'cn', or 'all')."""

    what = "GEdit-Bench"

    def __init__(self, data: str, language: str = "en"):
        super().__init__()
        if language not in LANGUAGES:
            raise ValueError(f"language={language!r}; expected one of {LANGUAGES}")
        self.paths = records.find_parquet_files(data, self.what)
        for path in self.paths:
            records.check_columns(path, COLUMNS, self.what)
        self.language = language
        self.total = records.count_rows(self.paths)

    def __iter__(self) -> Iterator[Example]:
        seen: set[str] = set()
        for path in self.paths:
            for row in records.parquet_rows(path, COLUMNS):
                try:
                    language = records.text_cell(row, "instruction_language")
                    if self.language != "all" and language != self.language:
                        continue
                    key = records.text_cell(row, "key")
                    if (language, key) in seen:
                        raise records.BadRow("duplicate_key", f"key {key!r} repeats")
                    if os.sep in key or key.startswith("."):
                        raise records.BadRow("bad_key", f"key {key!r} is not a file name")
                    seen.add((language, key))
                    yield Example(
                        key=key if self.language != "all" else f"{language}_{key}",
                        instruction=records.text_cell(row, "instruction"),
                        source=records.image_cell(
                            row["input_image"], "input_image", os.path.dirname(path)
                        ),
                        category=records.text_cell(row, "task_type"),
                        meta=dict(gedit_key=key, instruction_language=language),
                    )
                except records.BadRow as err:
                    self.skip(err)


def score(examples: Sequence[Example], inputs, edits, scorer) -> list[dict]:
    """No local metric: the judge scores GEdit-Bench."""
    return [{} for _ in examples]


def example_images(example: Example) -> dict[str, np.ndarray]:
    return {}


def protocol(scorer) -> dict:
    """What the judge layout follows (metrics.json `protocol`)."""
    return dict(
        follows=(
            "stepfun-ai/Step1X-Edit GEdit-Bench (EVAL.md, test_gedit_score.py, "
            "generate_image_example.py); EditMGT's eval/geditbench/rate.py"
        ),
        scores="VLM judge (VIEScore; GPT-4.1 in EditMGT's paper), not run here: needs the network",
        layout=(
            "<out>/gedit/<model>/fullset/<task_type>/<language>/<key>.png (the edit, at the "
            "input's size) and <key>_SRCIMG.png (the input_image, PNG, as generate_image_example.py "
            "saves it)"
        ),
        jpeg_round_trip=False,
        deviations=[],
    )
