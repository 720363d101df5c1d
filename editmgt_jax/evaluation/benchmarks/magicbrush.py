"""MagicBrush (Zhang et al., 2023) from either of its releases, and its metrics.

Two layouts, told apart by what `--data` holds:

- the HF parquet release (train, dev): `*.parquet` files with `img_id`, `turn_index`,
  `source_img`, `mask_img` (white = the edit region), `instruction`, `target_img` (image cells
  {bytes, path});
- the test split's zip (password-protected, unpacked by the user; the hub has no test split):
  `edit_sessions.json` ({img_id: [{"input", "mask", "output", "instruction"}, ...] in turn
  order}) beside `images/<img_id>/` holding `<img_id>-input.png`, `<img_id>-output<t>.png` and
  `<img_id>-mask<t>.png`. `--data` may be that folder or the folder holding it (`test/`). Turn t
  is the list's t-th entry; its input is the entry's `input` (turn t > 1: the ground-truth
  output of turn t - 1, as the parquet rows have it).

A mask marks the edit region white (grey >= 128); an RGBA mask with transparent pixels marks
it by transparency (the DALL-E 2 editor's convention) instead.

Captions for CLIP-T come from the release's local captions ({img_id: {"<img_id>-output<t>.png":
caption}}): `--captions FILE`, else the first of `local_descriptions.json` (the name in the
test zip) and `local_captions.json` (the name in MagicBrush's evaluation/README.md example) in
the data folder (or the sessions folder).

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

import io
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from PIL import Image

from editmgt_jax.evaluation import benchmark_metrics as bm
from editmgt_jax.evaluation.benchmarks import records
from editmgt_jax.evaluation.benchmarks.records import BadRow, Example

SUITE = "magicbrush"
SETTINGS = ("independent", "iterative")
COLUMNS = ("img_id", "turn_index", "source_img", "mask_img", "instruction", "target_img")
CAPTIONS_FILE = "local_descriptions.json"
CAPTIONS_FILES = (CAPTIONS_FILE, "local_captions.json")
SESSIONS_FILE = "edit_sessions.json"
IMAGE_FOLDER = "images"
SESSION_FIELDS = ("input", "mask", "output", "instruction")
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


def caption_for(captions: dict, img_id: str, turn: int, name: str | None = None) -> str | None:
    """The local caption of a turn's target (`name`, default `<img_id>-output<turn>.png`), or
    None."""
    entry = captions.get(str(img_id))
    if not isinstance(entry, dict):
        return None
    value = entry.get(name or f"{img_id}-output{turn}.png")
    return value.strip() if isinstance(value, str) and value.strip() else None


def find_sessions_file(data: str) -> str | None:
    """`edit_sessions.json` in `data` or in `data/test` (the test zip's layout), else None."""
    if not os.path.isdir(data):
        return None
    for folder in (data, os.path.join(data, "test")):
        path = os.path.join(folder, SESSIONS_FILE)
        if os.path.isfile(path):
            return path
    return None


def read_sessions(path: str) -> dict[str, list[dict]]:
    """{img_id: [turn entry, ...]} of an `edit_sessions.json`; raises `LayoutError`."""
    with open(path) as f:
        sessions = json.load(f)
    if not isinstance(sessions, dict) or not all(isinstance(v, list) for v in sessions.values()):
        raise records.LayoutError(
            f"MagicBrush: {path} is not {{img_id: [{{input, mask, output, instruction}}, ...]}}"
        )
    return {str(k).strip(): v for k, v in sessions.items()}


def _mask_from_image(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """bool [H, W] of a MagicBrush mask image (module docstring), nearest-resized to `size`."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            alpha = None
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                alpha = np.asarray(image.convert("RGBA"))[..., 3]
            if alpha is not None and (alpha < records.MASK_THRESHOLD).any():
                grey = Image.fromarray(((alpha < records.MASK_THRESHOLD) * 255).astype(np.uint8))
            else:
                grey = image.convert("L")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise BadRow("undecodable_mask", f"mask cannot be decoded: {err}") from err
    if grey.size != (size[1], size[0]):
        grey = grey.resize((size[1], size[0]), Image.Resampling.NEAREST)
    return np.asarray(grey) >= records.MASK_THRESHOLD


def find_captions(folders: Sequence[str]) -> str | None:
    """The first of CAPTIONS_FILES in `folders`, or None."""
    for folder in folders:
        for name in CAPTIONS_FILES:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
    return None


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
    """Examples of a MagicBrush folder in either layout (module docstring; `layout` says which:
    "edit_sessions" when `edit_sessions.json` is in `data` or `data/test`, else "parquet").

    Args:
      data: folder (or one .parquet file).
      captions: local-captions JSON (default: CAPTIONS_FILES in the data folder, if present).
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
        folder = data if os.path.isdir(data) else os.path.dirname(data)
        self.sessions_path = find_sessions_file(data)
        search = [folder]
        if self.sessions_path is not None:
            self.layout = "edit_sessions"
            self.paths = [self.sessions_path]
            self.session_folder = os.path.dirname(self.sessions_path)
            self.session_data = read_sessions(self.sessions_path)
            search.insert(0, self.session_folder)
        else:
            self.layout = "parquet"
            self.paths = records.find_parquet_files(data, self.what)
            for path in self.paths:
                records.check_columns(path, COLUMNS, self.what)
        self.captions_path = captions or find_captions(search)
        self.captions = read_captions(self.captions_path)
        self.sessions = None if sessions is None else {str(s) for s in sessions}
        self.turns = None if turns is None else {int(t) for t in turns}

    def session_turns(self) -> dict[str, list[int]]:
        """{img_id: sorted turn indices} from the id columns only (no image decoded)."""
        if self.layout == "edit_sessions":
            return {
                k: list(range(1, len(v) + 1)) for k, v in sorted(self.session_data.items()) if v
            }
        out: dict[str, set[int]] = {}
        for path in self.paths:
            for row in records.parquet_rows(path, ("img_id", "turn_index")):
                try:
                    out.setdefault(_img_id(row), set()).add(_turn(row))
                except BadRow:
                    continue  # counted when the full row is read
        return {k: sorted(v) for k, v in sorted(out.items())}

    def __iter__(self) -> Iterator[Example]:
        if self.layout == "edit_sessions":
            yield from self._iter_sessions()
            return
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

    def _iter_sessions(self) -> Iterator[Example]:
        """The test zip's layout: one example per entry of each session, in sorted img_id order."""
        for img_id, entries in sorted(self.session_data.items()):
            if self.sessions is not None and img_id not in self.sessions:
                continue
            folder = os.path.join(self.session_folder, IMAGE_FOLDER, img_id)
            for turn, entry in enumerate(entries, start=1):
                if self.turns is not None and turn not in self.turns:
                    continue
                try:
                    yield self._example(self._session_row(img_id, entry), img_id, turn, folder)
                except BadRow as err:
                    self.skip(err)

    @staticmethod
    def _session_row(img_id: str, entry: Any) -> dict:
        """A session entry as a parquet-like row (image cells are paths in `images/<img_id>/`)."""
        if not isinstance(entry, dict):
            raise BadRow("bad_session_entry", f"{img_id}: a turn entry is not an object")
        missing = [f for f in SESSION_FIELDS if not isinstance(entry.get(f), str)]
        if missing:
            raise BadRow("missing_field", f"{img_id}: a turn entry lacks {missing}")
        for field in ("input", "mask", "output"):
            if os.sep in entry[field] or entry[field].startswith("."):
                raise BadRow("bad_file_name", f"{img_id}: {field} {entry[field]!r}")
        cell = lambda name: {"bytes": None, "path": name}
        return dict(
            instruction=entry["instruction"],
            source_img=cell(entry["input"]),
            mask_img=cell(entry["mask"]),
            target_img=cell(entry["output"]),
            target_name=entry["output"],
        )

    def _example(self, row: dict, img_id: str, turn: int, folder: str) -> Example:
        instruction = records.text_cell(row, "instruction")
        source = records.image_cell(row["source_img"], "source_img", folder)
        target = records.image_cell(row["target_img"], "target_img", folder)
        mask = _mask_from_image(
            records.image_bytes(row["mask_img"], "mask_img", folder), source.shape[:2]
        )
        texts = {}
        caption = caption_for(self.captions, img_id, turn, row.get("target_name"))
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
            f"not computed: no {' or '.join(CAPTIONS_FILES)} in the data folder (MagicBrush's "
            "CLIP-T compares with the local captions; pass --captions FILE)"
        )
    return None


def protocol(scorer) -> dict:
    """What metrics.json's numbers follow (metrics.json `protocol`)."""
    return dict(
        follows="OSU-NLP-Group/MagicBrush evaluation/image_eval.py",
        settings=(
            "independent (every turn edits its ground-truth input: image_eval's all-turn pairs "
            "<id>_1, <id>_inde_<t>) and iterative (each turn edits the previous edit: the "
            "final-turn pairs <id>_iter_<last>); both scored on all turns and the final turn"
        ),
        l1_l2="nn.L1Loss / nn.MSELoss on ToTensor [0, 1], the edit PIL-bicubic-resized to the target",
        clip_i_dino=(
            "1 - scipy cosine distance of raw embeddings; OpenAI CLIP transform, DINO Resize 256 + "
            "CenterCrop 224"
        ),
        clip_t=(
            "eval_clip_t: cosine of the edit's CLIP image embedding and the local caption of the "
            "turn's target (<img_id>-output<t>.png)"
        ),
        jpeg_round_trip=False,
        deviations=[
            "attention_auroc / attention_iou / changed_outside are ours (MagicBrush reports none)"
        ],
    )


def example_images(example: Example) -> dict[str, np.ndarray]:
    """Figure columns this suite has besides source / edited / attention / held."""
    return dict(target=example.target, mask=example.mask)
