"""Runs a benchmark suite: edits its examples in batches, scores them, writes the report.

Per setting (MagicBrush: `independent`, `iterative`; the others: `edited`) it writes

    OUT/<setting>/<key>.png       the edit, at the input's size
    OUT/<setting>/<key>.npz       its consolidated attention (`heatmap`), hold mask, tokens and
                                  source tokens (token grid)
    OUT/<setting>/records.jsonl   one line of metrics per edit
    OUT/<setting>/figure.png      source | (target) | edited | (mask) | attention | held rows

and `OUT/metrics.json` (`suite`, `protocol`, `settings`, `overall`, `per_type`, `notes`,
`skipped`; for MagicBrush one {overall, final_turn, per_type} block per setting) and
`OUT/run.json` (the edit settings). `protocol` (each suite module's `protocol`) says which
official definition the numbers follow and where they deviate. Every file is written
atomically. GEdit-Bench's edits (and their inputs, `<key>_SRCIMG.png`) are also linked where
its judge scripts read them.

Resuming: an edit whose png and npz exist is reused, not re-run (a run stopped half-way
continues where it was); a rerun with other *edit* settings is refused, since it would mix
edits, while other *metric* settings (backbones, thresholds) rescore the reused edits. Examples
are read, edited and scored a chunk at a time, so memory holds one chunk of images.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import shutil
import sys
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from editmgt_jax.atomic import atomic_path
from editmgt_jax.editing import images as imio
from editmgt_jax.evaluation import benchmark_metrics as bm
from editmgt_jax.evaluation.benchmarks import emu_edit, gedit, magicbrush, pie_bench
from editmgt_jax.evaluation.benchmarks.records import Example
from editmgt_jax.evaluation.benchmarks.scoring import Scorer
from editmgt_jax.evaluation.figure import edit_grid

SUITES = {m.SUITE: m for m in (magicbrush, emu_edit, pie_bench, gedit)}
LOCALIZATION_METRICS = ("attention_auroc", "attention_iou", "changed_outside")
LOCALIZATION_NOTE = "not computed: {suite} has no edit-region masks"
FIGURE_TILE = 128
RUN_FILE, METRICS_FILE, RECORDS_FILE, FIGURE_FILE = (
    "run.json",
    "metrics.json",
    "records.jsonl",
    "figure.png",
)


@dataclasses.dataclass(frozen=True)
class EditSettings:
    """What decides the edits (a resumed run must use the same)."""

    checkpoint: str
    steps: int
    guidance: float
    hold_threshold: float
    reference_strength: float
    paste_back: bool
    resolution: int
    seed: int
    dtype: str | None = None


@dataclasses.dataclass(frozen=True)
class MetricSettings:
    """What decides the metrics of fixed edits (a change rescores reused edits)."""

    clip: str | None
    dino: str | None
    lpips: str
    iou_threshold: float
    changed_pixel_tolerance: float
    captions: str | None = None
    pie_jpeg_quality: int | None = bm.PIE_JPEG_QUALITY
    structure_antialias: bool = False


@dataclasses.dataclass
class SettingStats:
    edited: int = 0
    reused: int = 0
    rescored: int = 0


def example_seed(base: int, key: str) -> int:
    """Each example's PRNG seed: stable under --limit, order and batching."""
    return (base * 1_000_003 + zlib.crc32(key.encode())) % (2**31 - 1)


def _mean(values: Iterable[Any]) -> tuple[float | None, int]:
    finite = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    return (float(np.mean(finite)) if finite else None), len(finite)


def summarize(
    rows: Sequence[dict],
    metric_names: Sequence[str],
    extra: Callable[[Sequence[dict]], dict] | None = None,
) -> dict[str, Any]:
    """{"count", <metric>: mean, <metric>_count when some records lack it}: a metric no record
    has is left out (never reported as 0). `extra(rows)` (a suite's `summarize_extra`, e.g.
    PIE-Bench's uncapped PSNR) adds or replaces fields."""
    out: dict[str, Any] = {"count": len(rows)}
    for name in metric_names:
        if not any(name in r for r in rows):
            continue
        mean, n = _mean(r.get(name) for r in rows)
        out[name] = mean
        if n != len(rows):
            out[f"{name}_count"] = n
    if extra is not None:
        out.update(extra(rows))
    return out


def summary_block(
    rows: Sequence[dict],
    metric_names: Sequence[str],
    extra: Callable[[Sequence[dict]], dict] | None = None,
) -> dict[str, Any]:
    """{"overall": ..., "per_type": {category: ...}}."""
    categories = sorted({r["category"] for r in rows})
    return dict(
        overall=summarize(rows, metric_names, extra),
        per_type={
            c: summarize([r for r in rows if r["category"] == c], metric_names, extra)
            for c in categories
        },
    )


def _json_value(value: Any) -> Any:
    """NaN / inf become None (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str, data: Any) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(data, f, indent=2)


def write_records(path: str, rows: Sequence[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps({k: _json_value(v) for k, v in row.items()}) + "\n")


def read_records(path: str) -> dict[str, dict]:
    """{key: record} of an earlier run's JSONL (unreadable lines are dropped, then redone)."""
    out = {}
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(row, dict) and "key" in row:
                    out[row["key"]] = row
    return out


def _save_npz(path: str, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(buffer.getvalue())


class BenchmarkRun:
    """One suite run into `out` (see the module docstring).

    Args:
      suite: a SUITES name.
      out: output folder.
      editor: an `editmgt_jax.editor.Editor`.
      edit_settings, metric_settings: what the report records; the edit settings are passed to
        the Editor.
      scorer: the metric backbones.
      batch_size: edits per sampler call.
      figure_rows: rows of each setting's figure.
      gedit_model_name: the judge layout's model folder (GEdit-Bench).
    """

    def __init__(
        self,
        suite: str,
        out: str,
        editor: Any,
        edit_settings: EditSettings,
        metric_settings: MetricSettings,
        scorer: Scorer,
        batch_size: int = 4,
        figure_rows: int = 8,
        gedit_model_name: str = "editmgt_jax",
    ):
        if suite not in SUITES:
            raise ValueError(f"Unknown suite {suite!r}; expected one of {sorted(SUITES)}")
        self.suite, self.module = suite, SUITES[suite]
        self.out, self.editor, self.scorer = out, editor, scorer
        self.edit_settings, self.metric_settings = edit_settings, metric_settings
        self.batch_size, self.figure_rows = int(batch_size), int(figure_rows)
        self.chunk = max(4 * self.batch_size, 16)
        self.gedit_model_name = gedit_model_name
        self.stats: dict[str, SettingStats] = {}
        self._rescore = False

    # --- resume -----------------------------------------------------------------------------

    def check_resume(self) -> None:
        """Refuses an `out` holding edits of other edit settings; notes changed metric settings."""
        path = os.path.join(self.out, RUN_FILE)
        edit = dataclasses.asdict(self.edit_settings)
        metric = dataclasses.asdict(self.metric_settings)
        if os.path.isfile(path):
            with open(path) as f:
                previous = json.load(f)
            if previous.get("suite") != self.suite:
                raise ValueError(
                    f"{self.out!r} holds a {previous.get('suite')!r} run, not {self.suite!r}; "
                    "use another --out"
                )
            differ = {
                k: (previous["edit_settings"].get(k), v)
                for k, v in edit.items()
                if previous["edit_settings"].get(k) != v
            }
            if differ:
                raise ValueError(
                    f"{self.out!r} holds edits made with other settings "
                    + ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in differ.items())
                    + "; use another --out (or the same settings to resume)"
                )
            self._rescore = previous.get("metric_settings") != metric
        os.makedirs(self.out, exist_ok=True)
        write_json(path, dict(suite=self.suite, edit_settings=edit, metric_settings=metric))

    # --- editing ----------------------------------------------------------------------------

    def _paths(self, setting: str, key: str) -> tuple[str, str]:
        base = os.path.join(self.out, setting, key)
        return base + ".png", base + ".npz"

    def edit_chunk(
        self, setting: str, chunk: Sequence[Example], inputs: Sequence[np.ndarray], bar: tqdm
    ) -> tuple[list[np.ndarray], list[dict[str, np.ndarray]]]:
        """The edits of a chunk (uint8, at each input's size) and their attention maps; runs the
        Editor on those not already written, reuses the others."""
        s = self.edit_settings
        edits: list[np.ndarray | None] = [None] * len(chunk)
        maps: list[dict | None] = [None] * len(chunk)
        todo = []
        for i, example in enumerate(chunk):
            png, npz = self._paths(setting, example.key)
            if os.path.isfile(png) and os.path.isfile(npz):
                edits[i] = imio.load_image(png)[0]
                with np.load(npz) as data:
                    maps[i] = {k: data[k] for k in data.files}
                self.stats[setting].reused += 1
                bar.update(1)
            else:
                todo.append(i)
        if todo:
            requests = [
                self.editor.prepare(
                    inputs[i],
                    chunk[i].instruction,
                    seed=example_seed(s.seed, chunk[i].key),
                    guidance=s.guidance,
                    hold_threshold=s.hold_threshold,
                    name=chunk[i].key,
                )
                for i in todo
            ]
            results = self.editor.run(
                requests,
                steps=s.steps,
                reference_strength=s.reference_strength,
                paste_back=s.paste_back,
                batch_size=self.batch_size,
                resolution=s.resolution,
                progress=bar.update,
            )
            for i, result in zip(todo, results, strict=True):
                png, npz = self._paths(setting, chunk[i].key)
                maps[i] = dict(
                    heatmap=result.heatmap,
                    hold_mask=result.hold_mask,
                    tokens=result.tokens,
                    source_tokens=result.source_tokens,
                )
                _save_npz(npz, **maps[i])  # before the png: a png marks a finished edit
                imio.save_image(png, result.image)
                edits[i] = result.image
                self.stats[setting].edited += 1
        return edits, maps

    # --- scoring ----------------------------------------------------------------------------

    def localization(
        self, example: Example, source: np.ndarray, edit: np.ndarray, maps: dict
    ) -> dict[str, float]:
        """Ours: attention AUROC / IoU against the mask, pixels changed outside it."""
        if example.mask is None:
            return {}
        mask = example.mask
        if mask.shape != source.shape[:2]:
            mask = imio.upsample_nearest(mask, source.shape[:2])
        auroc, iou = bm.attention_localization(
            np.asarray(maps["heatmap"], np.float32), mask, self.metric_settings.iou_threshold
        )
        changed = bm.changed_outside(
            source, edit, mask, self.metric_settings.changed_pixel_tolerance
        )
        return dict(attention_auroc=auroc, attention_iou=iou, changed_outside=changed)

    def score_chunk(
        self,
        setting: str,
        chunk: Sequence[Example],
        inputs: Sequence[np.ndarray],
        edits: Sequence[np.ndarray],
        maps: Sequence[dict],
        cached: dict[str, dict],
    ) -> list[dict]:
        need = [i for i, e in enumerate(chunk) if self._rescore or e.key not in cached]
        rows = {}
        if need:
            scored = self.module.score(
                [chunk[i] for i in need],
                [inputs[i] for i in need],
                [edits[i] for i in need],
                self.scorer,
            )
            rows = dict(zip(need, scored, strict=True))
        out = []
        for i, example in enumerate(chunk):
            if i not in rows:
                out.append(cached[example.key])
                continue
            if example.key in cached:
                self.stats[setting].rescored += 1
            row = dict(key=example.key, category=example.category, instruction=example.instruction)
            row.update(example.meta)
            row.update(rows[i])
            row.update(self.localization(example, inputs[i], edits[i], maps[i]))
            out.append(row)
        return out

    # --- one setting ------------------------------------------------------------------------

    def run_setting(
        self,
        setting: str,
        examples: Iterable[Example],
        total: int | None,
        input_for: Callable[[Example], np.ndarray | None],
        on_edit: Callable[[Example, str], None] | None = None,
        records: list[dict] | None = None,
        figure: list[dict] | None = None,
        desc: str = "",
    ) -> tuple[list[dict], list[dict]]:
        """Edits and scores `examples` into OUT/<setting>; returns (records, figure rows).
        `input_for` gives each example's input image (None: skip it, counted by the caller)."""
        os.makedirs(os.path.join(self.out, setting), exist_ok=True)
        self.stats.setdefault(setting, SettingStats())
        records = [] if records is None else records
        figure = [] if figure is None else figure
        cached = read_records(os.path.join(self.out, setting, RECORDS_FILE))
        with tqdm(
            total=total, desc=f"{self.suite} {setting} {desc}".strip(), file=sys.stderr
        ) as bar:
            for chunk in _chunks(examples, self.chunk):
                ready = [(e, input_for(e)) for e in chunk]
                chunk = [e for e, x in ready if x is not None]
                inputs = [x for _, x in ready if x is not None]
                if not chunk:
                    continue
                edits, maps = self.edit_chunk(setting, chunk, inputs, bar)
                records.extend(self.score_chunk(setting, chunk, inputs, edits, maps, cached))
                for example, source, edit, m in zip(chunk, inputs, edits, maps, strict=True):
                    if on_edit is not None:
                        on_edit(example, self._paths(setting, example.key)[0])
                    if len(figure) < self.figure_rows:
                        figure.append(self._figure_row(example, source, edit, m))
                write_records(os.path.join(self.out, setting, RECORDS_FILE), records)
        return records, figure

    def _figure_row(self, example: Example, source, edit, maps) -> dict:
        """Tile-sized images of one figure row (small, kept in memory)."""
        row = dict(
            instruction=example.instruction,
            source=source,
            edited=edit,
            attention=imio.heatmap_image(maps["heatmap"], source.shape[:2]),
            held=imio.mask_image(maps["hold_mask"], source.shape[:2]),
        )
        row.update({k: v for k, v in self.module.example_images(example).items() if v is not None})
        return {k: (v if k == "instruction" else _tile(v)) for k, v in row.items()}

    def write_figure(self, setting: str, rows: Sequence[dict]) -> None:
        if not rows:
            return
        order = ("source", "target", "edited", "mask", "attention", "held")
        columns = [c for c in order if all(c in r for r in rows)]
        path = os.path.join(self.out, setting, FIGURE_FILE)
        imio.save_image(path, edit_grid(rows, tile=FIGURE_TILE, columns=columns))

    # --- the suites -------------------------------------------------------------------------

    def summary_extra(self) -> Callable[[Sequence[dict]], dict] | None:
        return getattr(self.module, "summarize_extra", None)

    def protocol(self) -> dict[str, Any]:
        """The suite's `protocol` field (which official definition, JPEG, resize, LPIPS, ...)."""
        return self.module.protocol(self.scorer)

    def metric_names(self) -> tuple[str, ...]:
        extra = LOCALIZATION_METRICS if self.suite in ("magicbrush", "pie_bench") else ()
        return (*self.module.METRICS, *extra)

    def notes(self, reader: Any = None) -> dict[str, str]:
        notes = self.scorer.absence_notes(self.module.METRICS)
        if self.suite in ("emu_edit", "gedit"):
            for name in LOCALIZATION_METRICS:
                notes[name] = LOCALIZATION_NOTE.format(suite=self.suite)
        if self.suite == "magicbrush" and reader is not None:
            note = magicbrush.captions_note(reader)
            if note:
                notes["clip_t"] = notes["clip_t_oracle"] = note
        if self.suite == "gedit":
            notes["scores"] = (
                "GEdit-Bench is scored by a VLM judge (VIEScore, GPT-4.1 in EditMGT's paper), not "
                f"run here: point its scripts at {os.path.join(self.out, gedit.JUDGE_FOLDER)} "
                f"with model name {self.gedit_model_name!r}"
            )
        return notes

    def settings_report(self, **extra: Any) -> dict[str, Any]:
        return dict(
            edit=dataclasses.asdict(self.edit_settings),
            metrics=dataclasses.asdict(self.metric_settings),
            backbones=self.scorer.describe(),
            batch_size=self.batch_size,
            **extra,
        )


def _tile(image: np.ndarray) -> np.ndarray:
    """A figure tile (uint8 FIGURE_TILE x FIGURE_TILE) of an image or a bool mask."""
    array = np.asarray(image)
    array = array.astype(np.uint8) * 255 if array.dtype == bool else array.astype(np.uint8)
    return np.asarray(Image.fromarray(array).resize((FIGURE_TILE, FIGURE_TILE)))


def _chunks(items: Iterable[Example], size: int) -> Iterator[list[Example]]:
    chunk: list[Example] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _limited(items: Iterable[Example], limit: int | None) -> Iterator[Example]:
    for i, item in enumerate(items):
        if limit is not None and i >= limit:
            return
        yield item


def _link(source: str, dest: str) -> None:
    """`dest` becomes the same file as `source` (a hard link, else a copy), atomically."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with atomic_path(dest) as tmp:
        os.remove(tmp)
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


def _write_judge_files(out: str, model_name: str, example: Example, png: str) -> None:
    """GEdit-Bench: the edit where both judge scripts read it, and its input as
    `<key>_SRCIMG.png` (test_gedit_score.py skips a sample without it)."""
    _link(png, gedit.judge_path(out, model_name, example))
    source = gedit.source_path(out, model_name, example)
    if not os.path.isfile(source) and example.source is not None:
        imio.save_image(source, example.source)


def run_magicbrush(
    run: BenchmarkRun,
    data: str,
    limit: int | None,
    captions: str | None = None,
    settings: Sequence[str] = magicbrush.SETTINGS,
) -> dict[str, Any]:
    """Both MagicBrush settings, from either layout (`magicbrush.MagicBrushReader`); `limit`
    counts sessions (img_ids, in sorted order)."""
    reader = magicbrush.MagicBrushReader(data, captions=captions)
    sessions = reader.session_turns()
    chosen = list(sessions)[:limit] if limit is not None else list(sessions)
    finals = {img_id: sessions[img_id][-1] for img_id in chosen}
    turns_total = sum(len(sessions[s]) for s in chosen)
    names = run.metric_names()
    result: dict[str, Any] = {}
    for setting in settings:
        if setting not in magicbrush.SETTINGS:
            raise ValueError(f"MagicBrush setting {setting!r}; expected {magicbrush.SETTINGS}")
        if setting == "independent":
            part = magicbrush.MagicBrushReader(data, captions=captions, sessions=chosen)
            records, figure = run.run_setting(setting, part, turns_total, lambda e: e.source)
            skipped = Counter(part.skipped)
        else:
            records, figure, skipped = _iterative(run, data, captions, chosen, sessions)
        for row in records:
            row["final_turn"] = row["turn_index"] == finals[row["img_id"]]
        write_records(os.path.join(run.out, setting, RECORDS_FILE), records)
        block = summary_block(records, names, run.summary_extra())
        block["final_turn"] = summarize(
            [r for r in records if r["final_turn"]], names, run.summary_extra()
        )
        block["skipped"] = dict(skipped)
        block["stats"] = dataclasses.asdict(run.stats[setting])
        result[setting] = block
        run.write_figure(setting, figure)
    return dict(
        suite=run.suite,
        protocol=dict(run.protocol(), layout=reader.layout),
        settings=run.settings_report(
            limit=limit, captions=reader.captions_path, magicbrush_settings=list(settings)
        ),
        **result,
        notes=run.notes(reader),
    )


def _iterative(run, data, captions, chosen, sessions):
    """Iterative setting: turn t of every session edits its turn t - 1 edit; read one turn at a
    time. Returns (records, figure rows, skipped counts)."""
    records: list[dict] = []
    figure: list[dict] = []
    skipped: Counter[str] = Counter()
    turns = sorted({t for s in chosen for t in sessions[s]})
    setting = "iterative"

    def previous_edit(example: Example) -> np.ndarray | None:
        turn, img_id = example.meta["turn_index"], example.meta["img_id"]
        if turn == sessions[img_id][0] == 1:
            return example.source
        path = run._paths(setting, magicbrush.example_key(img_id, turn - 1))[0]
        if turn - 1 in sessions[img_id] and os.path.isfile(path):
            return imio.load_image(path)[0]
        skipped["iterative_previous_turn_missing"] += 1
        return None

    for turn in turns:
        reader = magicbrush.MagicBrushReader(data, captions=captions, sessions=chosen, turns=[turn])
        count = sum(turn in sessions[s] for s in chosen)
        run.run_setting(
            setting,
            reader,
            count,
            previous_edit,
            records=records,
            figure=figure,
            desc=f"turn {turn}",
        )
        skipped.update(reader.skipped)
    return records, figure, skipped


def run_single(
    run: BenchmarkRun, reader: Any, limit: int | None, **settings_extra: Any
) -> dict[str, Any]:
    """Emu Edit, PIE-Bench, GEdit-Bench: one setting (`edited`)."""
    total = reader.total if limit is None else min(limit, reader.total or limit)
    on_edit = None
    if run.suite == "gedit":
        on_edit = lambda e, png: _write_judge_files(run.out, run.gedit_model_name, e, png)
    records, figure = run.run_setting(
        "edited", _limited(reader, limit), total, lambda e: e.source, on_edit=on_edit
    )
    run.write_figure("edited", figure)
    block = summary_block(records, run.metric_names(), run.summary_extra())
    return dict(
        suite=run.suite,
        protocol=run.protocol(),
        settings=run.settings_report(limit=limit, **settings_extra),
        **block,
        notes=run.notes(),
        skipped=dict(reader.skipped),
        stats=dataclasses.asdict(run.stats["edited"]),
    )
