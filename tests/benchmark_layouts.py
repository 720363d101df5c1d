"""Miniature copies of the benchmarks' released layouts, written by the tests themselves:
synthetic scenes (a coloured square on a plain background; the edit recolours it; its mask is
the square), each layout with one bad row that the readers must skip and count."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

COLOURS = [(200, 30, 30), (30, 30, 200), (30, 160, 60), (220, 200, 40), (120, 40, 160)]
# Instructions in the words the converted miniature's tokenizers know (tests/released_layout.py).
INSTRUCTIONS = ["make the red circle blue", "make it green", "make the square red"]


def scene(size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source, target, mask) uint8 [size, size, 3] x 2 and bool [size, size]."""
    rng = np.random.default_rng(seed)
    background = np.array(COLOURS[seed % len(COLOURS)], np.uint8) // 2 + 60
    source = np.broadcast_to(background, (size, size, 3)).copy()
    side = size // 3
    top, left = rng.integers(0, size - side, size=2)
    mask = np.zeros((size, size), bool)
    mask[top : top + side, left : left + side] = True
    source[mask] = COLOURS[(seed + 1) % len(COLOURS)]
    target = source.copy()
    target[mask] = COLOURS[(seed + 2) % len(COLOURS)]
    return source, target, mask


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def cell(data: bytes, name: str = "") -> dict:
    return {"bytes": data, "path": name}


def _image_type() -> pa.DataType:
    return pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _write(path: str, rows: list[dict], image_columns: tuple[str, ...]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fields = []
    for name, value in rows[0].items():
        if name in image_columns:
            fields.append(pa.field(name, _image_type()))
        elif isinstance(value, bool):
            fields.append(pa.field(name, pa.bool_()))
        elif isinstance(value, int):
            fields.append(pa.field(name, pa.int64()))
        else:
            fields.append(pa.field(name, pa.string()))
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema(fields)), path)


MAGICBRUSH_SESSIONS = {"100": 2, "101": 2, "102": 1}  # img_id -> turns


def magicbrush(root: str, size: int = 32) -> dict:
    """Parquet shards (sessions split over two files) + local_descriptions.json; one more
    session whose turn-1 source is not an image. Returns {key: (source, target, mask)}."""
    truth, captions, shards = {}, {}, [[], []]
    for s, (img_id, turns) in enumerate(MAGICBRUSH_SESSIONS.items()):
        current = None
        captions[img_id] = {f"{img_id}-input.png": "a picture"}
        for turn in range(1, turns + 1):
            source, target, mask = scene(size, 10 * s + turn)
            if current is not None:  # MagicBrush: a turn's source is the previous target
                source = current
                target = source.copy()
                target[mask] = COLOURS[turn % len(COLOURS)]
            current = target
            truth[f"{img_id}_{turn}"] = (source, target, mask)
            captions[img_id][f"{img_id}-output{turn}.png"] = f"a square of colour {turn}"
            shards[s % 2].append(
                dict(
                    img_id=img_id,
                    turn_index=turn,
                    source_img=cell(png(source)),
                    mask_img=cell(png(mask.astype(np.uint8) * 255)),
                    instruction=INSTRUCTIONS[(s + turn) % len(INSTRUCTIONS)],
                    target_img=cell(png(target)),
                )
            )
    good = shards[1][0]
    shards[1].append(dict(good, img_id="999", source_img=cell(b"not an image")))
    columns = ("source_img", "mask_img", "target_img")
    _write(os.path.join(root, "data", "test-00000-of-00002.parquet"), shards[0], columns)
    _write(os.path.join(root, "data", "test-00001-of-00002.parquet"), shards[1], columns)
    with open(os.path.join(root, "local_descriptions.json"), "w") as f:
        json.dump(captions, f)
    return truth


def emu_edit(root: str, size: int = 32) -> dict:
    """Validation and test rows (the same idx in both), one with an empty instruction."""
    rows, truth = [], {}
    for i, (split, idx) in enumerate(
        (("validation", 0), ("validation", 1), ("test", 0), ("test", 1))
    ):
        source, _, _ = scene(size, 50 + i)
        truth[f"{split}_{idx}"] = source
        rows.append(
            dict(
                instruction=INSTRUCTIONS[i % len(INSTRUCTIONS)],
                image=cell(png(source)),
                task=["color", "background"][i % 2],
                split=split,
                idx=idx,
                hash=f"h{i}",
                input_caption="a square",
                output_caption="a blue square",
            )
        )
    rows.append(dict(rows[0], idx=7, instruction="   "))
    _write(os.path.join(root, "data", "test-00000-of-00001.parquet"), rows, ("image",))
    return truth


def rle(mask: np.ndarray) -> list[int]:
    """PIE-Bench's encoding: (start, length) runs of ones over the row-major flattened mask."""
    flat = np.concatenate([[0], mask.ravel().astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(flat))
    starts, stops = edges[0::2], edges[1::2]
    return [int(v) for pair in zip(starts, stops - starts, strict=True) for v in pair]


def pie_bench(root: str, size: int = 512) -> dict:
    """mapping_file.json + annotation_images/ (PIE-Bench is 512 x 512); one entry whose image is
    missing. Returns {key: (source, mask)} (the mask without PIE-Bench's border)."""
    mapping, truth = {}, {}
    for i, type_id in enumerate(("0", "6", "6")):
        source, _, mask = scene(size, 70 + i)
        rel = f"{type_id}_type/{i:012d}.jpg"
        path = os.path.join(root, "annotation_images", rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(png(source))  # PNG bytes: lossless; PIL reads them whatever the name
        key = f"{i:012d}"
        truth[key] = (source, mask)
        mapping[key] = dict(
            image_path=rel,
            original_prompt="a [red] square",
            editing_prompt="a [blue] square",
            editing_instruction=INSTRUCTIONS[i % len(INSTRUCTIONS)],
            editing_type_id=type_id,
            blended_word="red blue",
            mask=rle(mask),
        )
    mapping["000000000099"] = dict(mapping["000000000000"], image_path="0_type/absent.jpg")
    with open(os.path.join(root, "mapping_file.json"), "w") as f:
        json.dump(mapping, f)
    return truth


def gedit(root: str, size: int = 32) -> dict:
    """English and Chinese rows; one English row whose image bytes are empty."""
    rows, truth = [], {}
    for i, (task, lang) in enumerate(
        (("color_alter", "en"), ("subject-add", "en"), ("color_alter", "cn"), ("subject-add", "en"))
    ):
        source, _, _ = scene(size, 90 + i)
        key = f"k{i:03d}"
        truth[(lang, key)] = source
        rows.append(
            dict(
                key=key,
                task_type=task,
                instruction=INSTRUCTIONS[i % len(INSTRUCTIONS)],
                instruction_language=lang,
                input_image=cell(png(source)),
                input_image_raw=cell(png(source)),
                Intersection_exist=True,
            )
        )
    rows.append(dict(rows[0], key="k_bad", input_image=cell(b"")))
    _write(
        os.path.join(root, "data", "train-00000-of-00001.parquet"),
        rows,
        ("input_image", "input_image_raw"),
    )
    return truth


def magicbrush_sessions(root: str, size: int = 32, captions: str = "local_descriptions.json"):
    """The MagicBrush test zip's layout, unpacked: `<root>/test/edit_sessions.json` ({img_id:
    [{input, mask, output, instruction}, ...]}) + `<root>/test/images/<img_id>/` with
    `<id>-input.png`, `<id>-output<t>.png`, `<id>-mask<t>.png`, and the local captions under
    `captions`. Session "201"'s turn-2 mask is an RGBA image whose transparent pixels are the
    region; session "202"'s turn-1 target file is missing. Returns {key: (source, target,
    mask)} of the readable turns."""
    folder = os.path.join(root, "test")
    truth, sessions, local = {}, {}, {}
    for s, (img_id, turns) in enumerate((("200", 1), ("201", 2), ("202", 1))):
        images = os.path.join(folder, "images", img_id)
        os.makedirs(images, exist_ok=True)
        current, entries = None, []
        local[img_id] = {}
        for turn in range(1, turns + 1):
            source, target, mask = scene(size, 30 + 10 * s + turn)
            if current is not None:
                source = current
                target = source.copy()
                target[mask] = COLOURS[(turn + 2) % len(COLOURS)]
            current = target
            name_in = f"{img_id}-input.png" if turn == 1 else f"{img_id}-output{turn - 1}.png"
            name_out, name_mask = f"{img_id}-output{turn}.png", f"{img_id}-mask{turn}.png"
            if turn == 1:
                with open(os.path.join(images, name_in), "wb") as f:
                    f.write(png(source))
            if img_id != "202":
                with open(os.path.join(images, name_out), "wb") as f:
                    f.write(png(target))
                truth[f"{img_id}_{turn}"] = (source, target, mask)
            if img_id == "201" and turn == 2:  # the region as transparency over the source
                rgba = np.dstack([source, np.where(mask, 0, 255).astype(np.uint8)])
                mask_png = png(rgba)
            else:
                mask_png = png(mask.astype(np.uint8) * 255)
            with open(os.path.join(images, name_mask), "wb") as f:
                f.write(mask_png)
            entries.append(
                dict(
                    input=name_in,
                    mask=name_mask,
                    output=name_out,
                    instruction=INSTRUCTIONS[(s + turn) % len(INSTRUCTIONS)],
                )
            )
            local[img_id][name_out] = f"a square of colour {turn} ({img_id})"
        sessions[img_id] = entries
    with open(os.path.join(folder, "edit_sessions.json"), "w") as f:
        json.dump(sessions, f)
    with open(os.path.join(folder, captions), "w") as f:
        json.dump(local, f)
    return truth
