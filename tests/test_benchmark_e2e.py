"""launch.benchmark end to end on miniature layouts of the four suites: a random smoke bundle
stands for the embedded model (whose shapes may change), tiny random backbones (the vision
fixtures) for CLIP and DINO; one suite also runs with a converted miniature checkpoint."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file
from sklearn.metrics import pairwise

from editmgt_jax.editing import images as imio
from editmgt_jax.editor import Editor
from editmgt_jax.evaluation import benchmark_metrics as bm
from editmgt_jax.evaluation import benchmark_preprocess as bp
from editmgt_jax.evaluation.backbones import load_backbone
from editmgt_jax.evaluation.benchmarks import harness, pie_bench
from editmgt_jax.training.vq_losses import load_lpips, lpips_distance
from launch.benchmark import run_benchmark, summary_line
from tests import benchmark_layouts as layouts
from tests.fixtures_path import fixtures_dir
from tests.test_backbones import write_full_clip
from tests.test_benchmark_metrics import _ssim_direct

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITES = ("magicbrush", "emu_edit", "pie_bench", "gedit")
# Batch 1: the text encoder compiles once (the unconditional text is a batch of 1 too); the
# Editor's batching by bucket has its own tests, and the command-line test runs batches of 2.
STEPS, BATCH = 2, 1


@pytest.fixture(scope="module")
def env(smoke_bundle, tmp_path_factory):
    base = tmp_path_factory.mktemp("benchmarks")
    data, truth = {}, {}
    for suite in SUITES:
        data[suite] = str(base / "data" / suite)
        truth[suite] = getattr(layouts, suite)(data[suite])
    vision = fixtures_dir("vision", "clip_vision_tiny")
    with open(os.path.join(vision, "config.json")) as f:
        vision_config = json.load(f)
    clip = str(base / "clip")
    state = load_file(os.path.join(vision, "model.safetensors"))
    write_full_clip(clip, vision_config, state, vision_config["projection_dim"])
    dino = fixtures_dir("vision", "dino_vit_tiny")
    backbones = dict(clip=load_backbone(clip), dino=load_backbone(dino))
    editor = Editor.from_bundle(smoke_bundle)
    return dict(
        base=base,
        data=data,
        truth=truth,
        clip=clip,
        dino=dino,
        backbones=backbones,
        editor=editor,
        bundle=smoke_bundle,
    )


def run(env, suite, out, **kwargs):
    args = dict(clip=env["clip"], dino=env["dino"], backbones=env["backbones"])
    args.update(kwargs)
    return run_benchmark(
        suite,
        env["data"][suite],
        out,
        env["bundle"],
        steps=STEPS,
        batch_size=BATCH,
        editor=env["editor"],
        **args,
    )


@pytest.fixture(scope="module")
def runs(env):
    return {s: (out := str(env["base"] / f"out_{s}"), run(env, s, out)) for s in SUITES}


def _load(path):
    return imio.load_image(path)[0]


def _records(out, setting):
    with open(os.path.join(out, setting, harness.RECORDS_FILE)) as f:
        return [json.loads(line) for line in f]


def test_magicbrush_l1_l2_equal_an_independent_computation_from_the_saved_images(env, runs):
    out, result = runs["magicbrush"]
    truth = env["truth"]["magicbrush"]
    for setting in ("independent", "iterative"):
        l1, l2, final_l1 = [], [], []
        for key, (_, target, _) in truth.items():
            edit = _load(os.path.join(out, setting, f"{key}.png")).astype(np.float64) / 255
            assert edit.shape == target.shape
            diff = edit - target / 255.0
            l1.append(np.abs(diff).mean())
            l2.append((diff**2).mean())
            img_id, turn = key.split("_")
            if int(turn) == layouts.MAGICBRUSH_SESSIONS[img_id]:
                final_l1.append(np.abs(diff).mean())
        block = result[setting]
        assert block["overall"]["count"] == len(truth) == 5
        assert block["overall"]["l1"] == pytest.approx(np.mean(l1), abs=1e-12)
        assert block["overall"]["l2"] == pytest.approx(np.mean(l2), abs=1e-12)
        assert block["final_turn"]["count"] == 3
        assert block["final_turn"]["l1"] == pytest.approx(np.mean(final_l1), abs=1e-12)
        assert block["skipped"] == {"undecodable_image": 1}
        assert set(block["per_type"]) == {"turn_1", "turn_2"}
        for name in ("clip_i", "dino", "clip_t", "clip_t_oracle", "attention_auroc"):
            assert np.isfinite(block["overall"][name]), name


def test_magicbrush_iterative_turns_edit_the_previous_edit(env, runs):
    out, result = runs["magicbrush"]
    # Turn 1 has the same input and seed in both settings: the same edit.
    for img_id in layouts.MAGICBRUSH_SESSIONS:
        np.testing.assert_array_equal(
            _load(os.path.join(out, "iterative", f"{img_id}_1.png")),
            _load(os.path.join(out, "independent", f"{img_id}_1.png")),
        )
    # Turn 2's pixels changed outside the mask are counted against the turn-1 edit it edited.
    records = {r["key"]: r for r in _records(out, "iterative")}
    mask = env["truth"]["magicbrush"]["100_2"][2]
    expected = bm.changed_outside(
        _load(os.path.join(out, "iterative", "100_1.png")),
        _load(os.path.join(out, "iterative", "100_2.png")),
        mask,
        8.0,
    )
    assert records["100_2"]["changed_outside"] == pytest.approx(expected)
    assert records["100_2"]["final_turn"] and not records["100_1"]["final_turn"]


def test_outputs_of_every_suite(env, runs):
    for suite in SUITES:
        out, result = runs[suite]
        with open(os.path.join(out, harness.METRICS_FILE)) as f:
            assert json.load(f) == json.loads(json.dumps(result))
        assert result["suite"] == suite and result["settings"]["edit"]["steps"] == STEPS
        settings = ("independent", "iterative") if suite == "magicbrush" else ("edited",)
        for setting in settings:
            records = _records(out, setting)
            assert os.path.isfile(os.path.join(out, setting, harness.FIGURE_FILE))
            for row in records:
                png = os.path.join(out, setting, f"{row['key']}.png")
                with np.load(png[:-4] + ".npz") as maps:
                    assert maps["heatmap"].shape == maps["hold_mask"].shape
                assert _load(png).ndim == 3
        if suite != "magicbrush":
            assert len(records) == result["overall"]["count"]
    assert runs["emu_edit"][1]["overall"]["count"] == 4
    assert runs["pie_bench"][1]["overall"]["count"] == 3
    assert runs["gedit"][1]["overall"] == {"count": 3}
    assert runs["pie_bench"][1]["skipped"] == {"missing_image": 1}
    assert set(runs["pie_bench"][1]["per_type"]) == {"random", "change attribute color"}
    lpips = runs["pie_bench"][1]["settings"]["backbones"]["lpips"]
    assert lpips["net"] == "alexnet" and "squeeze" in lpips["note"].lower()


def _jpeg(image):
    """PnPInversion's run scripts save `<image_path>.jpg` with PIL's defaults (quality 75)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG")
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def test_pie_bench_background_metrics_equal_an_independent_computation(env, runs):
    out, result = runs["pie_bench"]
    reader = pie_bench.PIEBenchReader(env["data"]["pie_bench"])
    records = {r["key"]: r for r in _records(out, "edited")}
    psnrs = []
    for example in reader:
        edit = _jpeg(_load(os.path.join(out, "edited", f"{example.key}.png")))
        assert edit.shape == (512, 512, 3)
        keep = (~example.mask).astype(np.float32)[..., None]  # the edit region zeroed
        a = example.source.astype(np.float32) / 255 * keep
        b = edit.astype(np.float32) / 255 * keep
        mse = float(np.mean((a.astype(np.float64) - b) ** 2))
        row = records[example.key]
        assert row["mse_unedit_part"] == pytest.approx(mse, rel=1e-9)
        psnr = math.inf if mse == 0 else 10 * np.log10(1 / mse)  # torchmetrics: no cap
        psnrs.append(psnr)
        if math.isfinite(psnr):
            assert row["psnr_unedit_part"] == pytest.approx(psnr, rel=1e-9)
        else:
            assert row["psnr_unedit_part"] is None and row["exact_background"] is True
        assert row["exact_background"] is (not math.isfinite(psnr))
        assert row["ssim_unedit_part"] == pytest.approx(
            _ssim_direct(b.astype(np.float64), a.astype(np.float64)), abs=1e-9
        )
        for name in pie_bench.METRICS + harness.LOCALIZATION_METRICS:
            assert name in row, name
    overall = result["overall"]
    assert overall["exact_background_count"] == sum(not math.isfinite(p) for p in psnrs)
    expected = "inf" if any(math.isinf(p) for p in psnrs) else pytest.approx(np.mean(psnrs))
    assert overall["psnr_unedit_part"] == expected
    assert result["protocol"]["jpeg_round_trip"] is True
    assert result["settings"]["metrics"]["pie_jpeg_quality"] == 75


def _cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_backbone_metrics_are_wired_to_the_right_images_and_texts(env, runs):
    """Each backbone metric recomputed from the saved edits, the layouts' own images and texts
    and the backbones called directly: scoring CLIP-I against the source, swapping captions or
    prompts, or skipping PIE-Bench's JPEG round trip would fail here."""
    clip, dino = env["backbones"]["clip"], env["backbones"]["dino"]
    image = lambda x, crop="round": clip.embed(bp.clip_pixels([x], clip.config.image_size, crop))[0]
    text = lambda t: clip.text.embed([t])[0]
    close = lambda value: pytest.approx(value, abs=2e-5)

    out, _ = runs["magicbrush"]
    rows = {r["key"]: r for r in _records(out, "independent")}
    for key, (_, target, _) in env["truth"]["magicbrush"].items():
        edit = _load(os.path.join(out, "independent", f"{key}.png"))
        caption = text(f"a square of colour {key.split('_')[1]}")
        row = rows[key]
        assert row["clip_i"] == close(_cos(image(edit), image(target)))
        assert row["dino"] == close(
            _cos(dino.embed(bp.dino_pixels([edit]))[0], dino.embed(bp.dino_pixels([target]))[0])
        )
        assert row["clip_t"] == close(_cos(image(edit), caption))
        assert row["clip_t_oracle"] == close(_cos(image(target), caption))

    out, _ = runs["emu_edit"]
    rows = {r["key"]: r for r in _records(out, "edited")}
    t_in, t_out = text("a square"), text("a blue square")
    unit = lambda v: np.asarray(v, np.float64) / np.linalg.norm(v)
    for key, source in env["truth"]["emu_edit"].items():
        edit = _load(os.path.join(out, "edited", f"{key}.png"))
        e_src, e_edit = image(source), image(edit)
        row = rows[key]
        assert row["clip_img"] == close(_cos(e_src, e_edit))
        assert row["clip_out"] == close(_cos(e_edit, t_out))
        assert row["clip_dir"] == close(_cos(unit(e_edit) - unit(e_src), unit(t_out) - unit(t_in)))
        assert row["dino"] == close(
            _cos(dino.embed(bp.dino_pixels([source]))[0], dino.embed(bp.dino_pixels([edit]))[0])
        )

    out, _ = runs["pie_bench"]
    rows = {r["key"]: r for r in _records(out, "edited")}
    module, variables = load_lpips("alexnet")
    t_src, t_edit = text("a red square"), text("a blue square")  # brackets stripped
    for key, (source, mask) in env["truth"]["pie_bench"].items():
        edit = _jpeg(_load(os.path.join(out, "edited", f"{key}.png")))
        region = mask.copy()  # with the evaluator's border
        region[0, :] = region[-1, :] = region[:, 0] = region[:, -1] = True
        row = rows[key]
        score = lambda e, t: max(100 * _cos(e, t), 0.0)
        assert row["clip_similarity_source_image"] == close(score(image(source, "floor"), t_src))
        assert row["clip_similarity_target_image"] == close(score(image(edit, "floor"), t_edit))
        part = np.uint8(edit * region[..., None])
        assert row["clip_similarity_target_image_edit_part"] == close(
            score(image(part, "floor"), t_edit)
        )
        keys = [
            dino.last_layer_keys(bp.structure_pixels(x.astype(np.float32))[None])[0]
            for x in (source, edit)
        ]
        sims = [pairwise.cosine_similarity(k) for k in keys]
        assert row["structure_distance"] == pytest.approx(
            np.mean((sims[0] - sims[1]) ** 2), rel=1e-4, abs=1e-9
        )
        keep = (~region).astype(np.float32)[..., None]
        masked = [jnp.asarray((x.astype(np.float32) / 255 * keep)[None]) for x in (source, edit)]
        lpips = float(lpips_distance(module, variables, *masked)[0])
        assert row["lpips_unedit_part"] == pytest.approx(lpips, rel=1e-4, abs=1e-6)


def test_localization_is_reported_only_where_there_are_masks(runs):
    for suite in ("magicbrush", "pie_bench"):
        result = runs[suite][1]
        block = result["independent"] if suite == "magicbrush" else result
        assert 0.0 <= block["overall"]["attention_auroc"] <= 1.0
        assert 0.0 <= block["overall"]["changed_outside"] <= 1.0
    for suite in ("emu_edit", "gedit"):
        result = runs[suite][1]
        for name in harness.LOCALIZATION_METRICS:
            assert name not in result["overall"] and "no edit-region masks" in result["notes"][name]


def test_gedit_edits_are_where_its_judge_reads_them(env, runs):
    out, result = runs["gedit"]
    for key, task in (("k000", "color_alter"), ("k001", "subject-add"), ("k003", "subject-add")):
        judged = os.path.join(out, "gedit", "editmgt_jax", "fullset", task, "en", f"{key}.png")
        with open(judged, "rb") as a, open(os.path.join(out, "edited", f"{key}.png"), "rb") as b:
            assert a.read() == b.read()
        source = env["truth"]["gedit"][("en", key)]
        assert _load(judged).shape == source.shape
        # test_gedit_score.py reads the input beside the edit and skips a sample without it.
        np.testing.assert_array_equal(_load(judged[: -len(".png")] + "_SRCIMG.png"), source)
    assert not os.path.exists(
        os.path.join(
            out, "gedit", "editmgt_jax", "fullset", "color_alter", "en", "k_bad_SRCIMG.png"
        )
    )
    assert "_SRCIMG" in result["protocol"]["layout"]
    assert "VIEScore" in result["notes"]["scores"]


def test_a_metric_without_its_backbone_is_absent_with_a_note(env):
    vision_only = load_backbone(fixtures_dir("vision", "clip_vision_tiny"))
    out = str(env["base"] / "emu_partial")
    result = run(
        env,
        "emu_edit",
        out,
        clip=fixtures_dir("vision", "clip_vision_tiny"),
        dino=None,
        backbones=dict(clip=vision_only),
    )
    overall = result["overall"]
    assert np.isfinite(overall["l1"]) and np.isfinite(overall["clip_img"])
    for name in ("clip_dir", "clip_out", "dino"):
        assert name not in overall and all(name not in r for r in _records(out, "edited"))
    assert "no text tower" in result["notes"]["clip_out"]
    assert result["notes"]["dino"] == "not computed: no --dino backbone given"


def test_resume_reuses_edits_and_refuses_other_edit_settings(env, runs, tmp_path):
    out = str(tmp_path / "resumed")
    shutil.copytree(runs["pie_bench"][0], out)
    first = runs["pie_bench"][1]
    removed = ["000000000001", "000000000002"]  # as if the run had stopped before these edits
    before = {}
    for key in removed:
        png = os.path.join(out, "edited", f"{key}.png")
        with np.load(png[:-4] + ".npz") as maps:
            before[key] = (_load(png), maps["tokens"])
        os.remove(png)
    again = run(env, "pie_bench", out)
    assert again["stats"] == {"edited": 2, "reused": 1, "rescored": 0}
    for key, (image, tokens) in before.items():
        png = os.path.join(out, "edited", f"{key}.png")
        with np.load(png[:-4] + ".npz") as maps:
            np.testing.assert_array_equal(maps["tokens"], tokens)  # per-example seeds
        np.testing.assert_array_equal(_load(png), image)
    assert again["overall"] == first["overall"]
    rescored = run(env, "pie_bench", out, iou_threshold=0.2)
    assert rescored["stats"] == {"edited": 0, "reused": 3, "rescored": 3}
    assert rescored["settings"]["metrics"]["iou_threshold"] == 0.2
    with pytest.raises(ValueError, match="steps: 2 there, 3 now"):
        run_benchmark(
            "pie_bench", env["data"]["pie_bench"], out, env["bundle"], steps=3, editor=env["editor"]
        )


@pytest.fixture(scope="module")
def converted(env, tmp_path_factory):
    """The miniature released folder converted to a bundle, and an Editor of it."""
    from editmgt_jax.checkpoint import folder
    from tests.released_layout import released_folder

    base = tmp_path_factory.mktemp("converted")
    bundle = folder.save_converted(
        folder.convert_folder(released_folder(base / "EditMGT")), str(base / "ckpt")
    )
    return bundle, Editor.from_bundle(bundle)


def _run_converted(env, converted, suite, out, **kwargs):
    bundle, editor = converted
    return run_benchmark(
        suite,
        env["data"][suite],
        out,
        bundle,
        clip=env["clip"],
        dino=env["dino"],
        backbones=env["backbones"],
        steps=STEPS,
        resolution=64,  # the released pipeline's 1024 px is far too big for the miniature
        batch_size=BATCH,
        editor=editor,
        **kwargs,
    )


def test_a_converted_miniature_checkpoint_runs_a_suite(env, converted, tmp_path):
    out = str(tmp_path / "out")
    result = _run_converted(
        env, converted, "magicbrush", out, magicbrush_settings=["independent"], lpips="none"
    )
    block = result["independent"]
    assert block["overall"]["count"] == 5 and np.isfinite(block["overall"]["l1"])
    assert np.isfinite(block["overall"]["clip_t"])
    assert result["settings"]["edit"]["resolution"] == 64 and "iterative" not in result
    assert result["random_init"] is False
    assert _load(os.path.join(out, "independent", "100_1.png")).shape == (32, 32, 3)
    with np.load(os.path.join(out, "independent", "100_1.npz")) as maps:
        assert maps["tokens"].shape == (4, 4)  # 64 px bucket, 16 px per token


@pytest.mark.slow
@pytest.mark.parametrize("suite", ["emu_edit", "pie_bench", "gedit", "magicbrush"])
def test_every_suite_runs_with_the_converted_checkpoint(env, converted, tmp_path, suite):
    result = _run_converted(env, converted, suite, str(tmp_path / suite))
    blocks = [result["independent"], result["iterative"]] if suite == "magicbrush" else [result]
    for block in blocks:
        assert block["overall"]["count"] >= 3


@pytest.mark.slow
def test_command_line_prints_the_final_json_line(env, tmp_path):
    out = str(tmp_path / "cli")
    command = [
        sys.executable,
        "-m",
        "launch.benchmark",
        "--suite=gedit",
        f"--data={env['data']['gedit']}",
        f"--checkpoint={env['bundle']}",
        f"--out={out}",
        "--limit=2",
        f"--steps={STEPS}",
        "--batch_size=2",
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert line["suite"] == "gedit" and line["overall"] == {"count": 2}
    assert line == summary_line(json.load(open(os.path.join(out, "metrics.json"))), out)
    bad = subprocess.run(
        [*command[:3], "--data=/nonexistent", f"--out={out}"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0
