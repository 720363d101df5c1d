"""MagicBrush (Zhang et al., 2023) from its HF parquet release, and its metrics.

Layout: `*.parquet` files with `img_id`, `turn_index`, `source_img`, `mask_img` (white = the
edit region), `instruction`, `target_img` (image cells {bytes, path}). Captions for CLIP-T come
from the release's `local_descriptions.json` ({img_id: {"<img_id>-output<turn>.png": caption}}),
when it is in the data folder or passed.

Two settings, as MagicBrush's evaluator scores them (evaluation/image_eval.py):
- independent: every turn edits its own (ground-truth) source image;
- iterative: turn 1 edits the source, each later turn the previous turn's edit.
Each is scored on all turns (`overall`) and on each session's final turn (`final_turn`).

Metrics per edit (against the turn's ground-truth target): L1, L2 (`benchmark_metrics`), CLIP-I
and DINO (cosine of the edit's and the target's CLIP / DINO embeddings), CLIP-T (cosine of the
edit's CLIP image embedding and the local caption's text embedding; `clip_t_oracle` is the same
for the target itself), and ours: attention AUROC / IoU against the turn's mask and the share of
pixels changed outside it (against the image the turn edited).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence

import numpy as np

from editmgt_jax.evaluation import benchmark_metrics as bm
from editmgt_jax.evaluation.benchmarks import records
from editmgt_jax.evaluation.benchmarks.records import BadRow, Example

SUITE = "magicbrush"
SETTINGS = ("independent", "iterative")
COLUMNS = ("img_id", "turn_index", "source_img", "mask_img", "instruction", "target_img")
CAPTIONS_FILE = "local_descriptions.json"
METRICS = ("l1", "l2", "clip_i", "dino", "clip_t", "clip_t_oracle")


def example_key(img_id: str, turn: int) -> str:
    """`<img_id>_<turn_index>`: the output file stem."""
    return f"{img_id}_{turn}"


def read_captions(path: str | None) -> dict:
    """The local-descriptions JSON, or {} when `path` is None."""
    if path is None:
        return {}
    with open(path) as f:
        captions = json.load(f)
    if not isinstance(captions, dict):
        raise records.LayoutError(f"{path}: expected {{img_id: {{file name: caption}}}}")
    return captions


def caption_for(captions: dict, img_id: str, turn: int) -> str | None:
    """The local caption of a turn's target (`<img_id>-output<turn>.png`), or None."""
    entry = captions.get(str(img_id))
    if not isinstance(entry, dict):
        return None
    value = entry.get(f"{img_id}-output{turn}.png")
    return value.strip() if isinstance(value, str) and value.strip() else None


def _img_id(row: dict) -> str:
    value = row.get("img_id")
    if value is None or not str(value).strip():
        raise BadRow("missing_img_id", "img_id is empty")
    return str(value).strip()


def _turn(row: dict) -> int:
    value = row.get("turn_index")
    try:
        turn = int(value)
    except (TypeError, ValueError) as err:
        raise BadRow("bad_turn_index", f"turn_index {value!r} is not an integer") from err
    if turn < 1:
        raise BadRow("bad_turn_index", f"turn_index {turn} < 1")
    return turn


class MagicBrushReader(records.Reader):
    """Examples of a MagicBrush parquet folder.

    Args:
      data: folder (or one .parquet file).
      captions: local-descriptions JSON (default: `<data>/local_descriptions.json` if present).
      sessions: keep only these img_ids (e.g. the first N of `session_turns`).
      turns: keep only these turn indices (the iterative setting reads one turn at a time).
    """

    what = "MagicBrush"

    def __init__(
        self,
        data: str,
        captions: str | None = None,
        sessions: Sequence[str] | None = None,
        turns: Sequence[int] | None = None,
    ):
        super().__init__()
        self.paths = records.find_parquet_files(data, self.what)
        for path in self.paths:
            records.check_columns(path, COLUMNS, self.what)
        folder = data if os.path.isdir(data) else os.path.dirname(data)
        default = os.path.join(folder, CAPTIONS_FILE)
        self.captions_path = captions or (default if os.path.isfile(default) else None)
        self.captions = read_captions(self.captions_path)
        self.sessions = None if sessions is None else {str(s) for s in sessions}
        self.turns = None if turns is None else {int(t) for t in turns}

    def session_turns(self) -> dict[str, list[int]]:
        """{img_id: sorted turn indices} from the id columns only (no image decoded)."""
        out: dict[str, set[int]] = {}
        for path in self.paths:
            for row in records.parquet_rows(path, ("img_id", "turn_index")):
                try:
                    out.setdefault(_img_id(row), set()).add(_turn(row))
                except BadRow:
                    continue  # counted when the full row is read
        return {k: sorted(v) for k, v in sorted(out.items())}

    def __iter__(self) -> Iterator[Example]:
        for path in self.paths:
            folder = os.path.dirname(path)
            for row in records.parquet_rows(path, COLUMNS):
                try:
                    img_id, turn = _img_id(row), _turn(row)
                    if self.sessions is not None and img_id not in self.sessions:
                        continue
                    if self.turns is not None and turn not in self.turns:
                        continue
                    yield self._example(row, img_id, turn, folder)
                except BadRow as err:
                    self.skip(err)

    def _example(self, row: dict, img_id: str, turn: int, folder: str) -> Example:
        instruction = records.text_cell(row, "instruction")
        source = records.image_cell(row["source_img"], "source_img", folder)
        target = records.image_cell(row["target_img"], "target_img", folder)
        mask = records.mask_cell(row["mask_img"], "mask_img", folder, source.shape[:2])
        texts = {}
        caption = caption_for(self.captions, img_id, turn)
        if caption is not None:
            texts["caption"] = caption
        return Example(
            key=example_key(img_id, turn),
            instruction=instruction,
            source=source,
            category=f"turn_{turn}",
            mask=mask,
            target=target,
            texts=texts,
            meta=dict(img_id=img_id, turn_index=turn),
        )


def score(examples: Sequence[Example], inputs, edits, scorer) -> list[dict]:
    """Metrics of each edit (module docstring). `inputs`: the uint8 image each turn edited (the
    source, or the previous edit); `edits`: uint8 edits at the input's size."""
    targets = [e.target for e in examples]
    rows = [
        dict(l1=bm.l1_distance(edit, t), l2=bm.l2_distance(edit, t))
        for edit, t in zip(edits, targets, strict=True)
    ]
    clip_edit = scorer.clip_images(edits)
    clip_target = scorer.clip_images(targets)
    if clip_edit is not None:
        for row, a, b in zip(rows, clip_edit, clip_target, strict=True):
            row["clip_i"] = bm.cosine_similarity(a, b)
    dino_edit, dino_target = scorer.dino_images(edits), scorer.dino_images(targets)
    if dino_edit is not None:
        for row, a, b in zip(rows, dino_edit, dino_target, strict=True):
            row["dino"] = bm.cosine_similarity(a, b)
    captioned = [i for i, e in enumerate(examples) if "caption" in e.texts]
    if clip_edit is not None and captioned:
        texts = scorer.clip_texts([examples[i].texts["caption"] for i in captioned])
        if texts is not None:
            for i, text in zip(captioned, texts, strict=True):
                rows[i]["clip_t"] = bm.cosine_similarity(clip_edit[i], text)
                rows[i]["clip_t_oracle"] = bm.cosine_similarity(clip_target[i], text)
    return rows


def captions_note(reader: MagicBrushReader) -> str | None:
    """Why CLIP-T is absent when no caption file was found, else None."""
    if reader.captions_path is None:
        return (
            f"not computed: no {CAPTIONS_FILE} in the data folder (MagicBrush's CLIP-T compares "
            "with the local captions; pass --captions FILE)"
        )
    return None


def example_images(example: Example) -> dict[str, np.ndarray]:
    """Figure columns this suite has besides source / edited / attention / held."""
    return dict(target=example.target, mask=example.mask)
