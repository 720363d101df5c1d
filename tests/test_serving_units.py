"""The serving parts without a running server: who may connect, request validation, examples,
the request guard and the output files (the server itself: tests/test_serve_api.py)."""

from __future__ import annotations

import doctest
import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from editmgt_jax.editor import Editor, EditResult
from editmgt_jax.serving import access, batching, examples, guard, inputs, outputs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "name",
    ["access", "inputs", "batching", "outputs"],
)
def test_docstring_examples(name):
    module = importlib.import_module(f"editmgt_jax.serving.{name}")
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


# --- who may connect ----------------------------------------------------------------------------


def test_only_loopback_addresses_count_as_local():
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert access.is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.5", "10.0.0.1", "example.org", "my-host"):
        assert not access.is_loopback(host), host


def test_another_address_needs_passwords_unless_allowed_on_purpose(tmp_path):
    assert access.credentials("127.0.0.1") is None
    with pytest.raises(ValueError, match="--auth USER:PASSWORD"):
        access.credentials("0.0.0.0")
    assert access.credentials("0.0.0.0", allow_unauthenticated=True) is None
    assert access.credentials("0.0.0.0", ["ann:pw:with:colons"]) == [("ann", "pw:with:colons")]
    logins = tmp_path / "logins.txt"
    logins.write_text("# team\nann:one\n\nbob:two\n")
    assert access.credentials("10.1.2.3", ["cy:three"], str(logins)) == [
        ("cy", "three"),
        ("ann", "one"),
        ("bob", "two"),
    ]
    for bad in ("ann", "ann:", ":pw"):
        with pytest.raises(ValueError, match="USER:PASSWORD"):
            access.parse_credential(bad)
    logins.write_text("ann:one\nnocolon\n")
    with pytest.raises(ValueError, match="line 2"):
        access.read_auth_file(str(logins))
    with pytest.raises(ValueError, match="does not exist"):
        access.read_auth_file(str(tmp_path / "missing.txt"))


def test_launcher_refuses_an_open_address_without_login(tmp_path):
    # Refused before any model is loaded (the checkpoint does not even exist).
    run = subprocess.run(
        [sys.executable, "-m", "launch.serve", "--host", "0.0.0.0", "--checkpoint", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    assert "--auth USER:PASSWORD" in run.stderr and "--allow_unauthenticated" in run.stderr


# --- one request's values -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def editor(smoke_bundle):
    return Editor.from_bundle(smoke_bundle)


@pytest.fixture(scope="module")
def upload_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uploads")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(folder / "img.png")
    stroke = np.zeros((30, 40, 4), np.uint8)
    stroke[5:10, 8:20] = 255  # white, opaque
    stroke[20:25, 0:5] = (0, 0, 0, 255)  # dark: not painted
    Image.fromarray(stroke).save(folder / "layer.png")
    Image.fromarray(np.kron(stroke, np.ones((2, 2, 1), np.uint8))).save(folder / "big_layer.png")
    Image.fromarray(np.zeros((30, 40, 4), np.uint8)).save(folder / "empty_layer.png")
    Image.fromarray(np.zeros((200, 200, 3), np.uint8)).save(folder / "huge.png")
    # At the smoke bundle's resolution: the warm-up's program.
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "square.png")
    (folder / "notes.png").write_text("not an image")
    return str(folder)


def _file(upload_dir, name):
    return {"path": os.path.join(upload_dir, name), "orig_name": name}


def _values(upload_dir, layers=(), **changes):
    values = dict(
        image={
            "background": _file(upload_dir, "img.png"),
            "layers": [_file(upload_dir, n) for n in layers],
            "composite": None,
        },
        instruction="make it blue",
        query="",
        steps=8,
        guidance=3.0,
        reference_strength=1.0,
        hold_threshold=0.3,
        seed=7,
        paste_back=True,
    )
    values.update(changes)
    return [values[name] for name in inputs.INPUT_NAMES]


LIMITS = inputs.Limits(max_pixels=10_000, max_steps=16)


def test_a_white_stroke_is_the_mask_and_no_stroke_the_whole_image(editor, upload_dir):
    edit = inputs.parse(
        editor, _values(upload_dir, ["layer.png"], query=" blue "), upload_dir, LIMITS
    )
    request = edit.request
    assert request.mask.shape == (30, 40) and request.mask.sum() == 5 * 12
    assert request.mask[5:10, 8:20].all() and edit.mask_box == (5, 8, 10, 20)
    assert (request.seed, request.guidance, request.hold_threshold, request.query) == (
        7,
        3.0,
        0.3,
        "blue",
    )
    assert (edit.steps, edit.reference_strength, edit.paste_back, request.warnings) == (
        8,
        1.0,
        True,
        [],
    )
    for layers in ((), ("empty_layer.png",)):
        whole = inputs.parse(editor, _values(upload_dir, layers), upload_dir, LIMITS)
        assert whole.request.mask is None and whole.mask_box is None


def test_a_mask_of_another_size_is_resized_with_a_warning(editor, upload_dir):
    edit = inputs.parse(editor, _values(upload_dir, ["big_layer.png"]), upload_dir, LIMITS)
    assert edit.request.mask.shape == (30, 40) and edit.mask_box == (5, 8, 10, 20)
    assert len(edit.request.warnings) == 1 and "80x60" in edit.request.warnings[0]


def test_unset_settings_take_the_bundle_defaults(editor, upload_dir):
    unset = dict.fromkeys(
        ["steps", "guidance", "reference_strength", "hold_threshold", "seed", "paste_back"]
    )
    edit = inputs.parse(editor, _values(upload_dir, **unset), upload_dir, LIMITS)
    pipeline = editor.pipeline
    assert edit.steps == pipeline["steps"] and edit.paste_back == pipeline["paste_back"]
    assert edit.request.guidance == pipeline["guidance"] and edit.request.seed == 0


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(image=None), "No image"),
        (dict(image={"background": None, "layers": []}), "No image"),
        (dict(instruction="   "), "instruction is empty"),
        (dict(instruction=None), "instruction is empty"),
        (dict(hold_threshold=1.5), r"lambda \(hold_threshold\) must be in \[0, 1\]"),
        (dict(hold_threshold=float("nan")), "must be finite"),
        (dict(steps=2.5), "steps must be a whole number"),
        (dict(steps=17), r"steps must be a whole number in \[1, 16\]"),
        (dict(seed=-1), "seed must be a whole number"),
        (dict(guidance=-1.0), "guidance must be >= 0"),
        (dict(guidance="3"), "guidance must be a number"),
        (dict(reference_strength=0.0), "reference_strength must be > 0"),
        (dict(paste_back="yes"), "paste_back must be true or false"),
        (dict(query=3), "query must be text"),
    ],
)
def test_bad_values_are_refused_with_a_message(editor, upload_dir, changes, message):
    with pytest.raises(inputs.InputError, match=message):
        inputs.parse(editor, _values(upload_dir, **changes), upload_dir, LIMITS)


def test_bad_files_are_refused_with_a_message(editor, upload_dir, tmp_path):
    def parse(background="img.png", layers=(), folder=upload_dir):
        values = _values(upload_dir, layers)
        values[0]["background"] = _file(folder, background)
        return inputs.parse(editor, values, upload_dir, LIMITS)

    with pytest.raises(inputs.InputError, match="'notes.png' is not a readable image"):
        parse("notes.png")
    with pytest.raises(inputs.InputError, match="over the limit of 10000"):
        parse("huge.png")
    with pytest.raises(inputs.InputError, match="mask layer 1 is not a readable image"):
        parse(layers=["notes.png"])
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "elsewhere.png")
    with pytest.raises(inputs.InputError, match="not uploaded to this server"):
        parse("elsewhere.png", folder=str(tmp_path))
    os.symlink(tmp_path / "elsewhere.png", os.path.join(upload_dir, "link.png"))
    with pytest.raises(inputs.InputError, match="not uploaded to this server"):
        parse("link.png")
    with pytest.raises(inputs.InputError, match="at most 8"):
        parse(layers=["layer.png"] * 9)


# --- examples -----------------------------------------------------------------------------------


def test_examples_are_read_from_a_jobs_file_and_bad_lines_skipped(tmp_path):
    (tmp_path / "examples").mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "examples" / name)
    jobs = tmp_path / "examples" / "jobs.jsonl"
    lines = [
        {"image": "examples/a.png", "instruction": "make it red", "out": "a_red.png"},  # repo root
        {"image": "b.png", "instruction": "add a ball"},  # next to the file
        {"image": "examples/missing.png", "instruction": "x"},
        {"instruction": "no image"},
    ]
    jobs.write_text("\n".join([*map(json.dumps, lines), "{not json", ""]))
    found = examples.read_examples(str(jobs))
    assert found == [
        examples.Example(str(tmp_path / "examples" / "a.png"), "make it red"),
        examples.Example(str(tmp_path / "examples" / "b.png"), "add a ball"),
    ]
    assert examples.read_examples(str(tmp_path / "none.jsonl")) == []
    assert examples.read_examples(None) == []


# --- the request guard --------------------------------------------------------------------------


async def _echo(request):
    body = await request.body()
    return JSONResponse({"path": request.url.path, "body": body.decode()})


@pytest.fixture()
def guarded(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "out.png").write_bytes(b"png")
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", served / "link.txt")
    routes = [Route("/{rest:path}", _echo, methods=["GET", "POST"])]
    middleware = [Middleware(guard.RequestGuard, roots=[str(served)], max_json_bytes=1000)]
    return TestClient(Starlette(routes=routes, middleware=middleware)), served


def test_the_file_routes_serve_only_files_inside_the_roots(guarded):
    client, served = guarded
    assert client.get(f"/gradio_api/file={served}/out.png").status_code == 200
    assert client.get(f"/prefix/gradio_api/file={served}/out.png").status_code == 200
    refused = [
        "/gradio_api/file=/etc/passwd",
        f"/gradio_api/file={served}/%2E%2E/secret.txt",  # '..' escape
        f"/gradio_api/file={served}/link.txt",  # a symlink out of the root
        "/gradio_api/file=http://93.184.216.34/a.png",  # Gradio would fetch and relay it
        "/gradio_api/file=README.md",  # a relative path (the working directory)
        "/gradio_api/file/etc/passwd",  # the deprecated form of the route
        "/gradio_api/proxy=http://93.184.216.34/x",
    ]
    for path in refused:
        response = client.get(path)
        assert response.status_code == 403, path
        assert "secret" not in response.text and "root:" not in response.text


def test_json_requests_may_not_name_files_by_url(guarded):
    client, served = guarded
    local = {"data": [{"background": {"path": f"{served}/out.png"}, "layers": []}, "x"]}
    response = client.post("/gradio_api/queue/join", json=local)
    assert response.status_code == 200 and json.loads(response.json()["body"]) == local
    for url in ("https://example.org/a.png", "file:///etc/passwd", "data:image/png;base64,AA"):
        remote = {"data": [{"background": None, "layers": [{"path": url}]}]}
        assert client.post("/gradio_api/queue/join", json=remote).status_code == 400, url
    assert client.post("/gradio_api/queue/join", json={"x": "y" * 2000}).status_code == 413
    # Other bodies pass untouched.
    response = client.post(
        "/gradio_api/upload", content=b"https://x", headers={"content-type": "text/plain"}
    )
    assert response.status_code == 200 and response.json()["body"] == "https://x"


# --- outputs ------------------------------------------------------------------------------------


def _result(rng):
    source = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return EditResult(
        image=rng.integers(0, 256, (6, 8, 3), dtype=np.uint8),
        source=source,
        heatmap=rng.random((3, 4)).astype(np.float32),
        hold_mask=rng.random((3, 4)) > 0.5,
        edit_mask=np.ones((3, 4), bool),
        source_tokens=np.zeros((3, 4), np.int32),
        tokens=np.zeros((3, 4), np.int32),
        bucket=(6, 8),
        name="x",
        warnings=[],
    )


def test_each_edit_writes_lossless_pngs_under_names_of_its_own(tmp_path):
    ran = batching.Ran(_result(np.random.default_rng(0)), None, 0.5, 1, 4)
    first, second = (
        outputs.write_images(ran, str(tmp_path)),
        outputs.write_images(ran, str(tmp_path)),
    )
    paths = [*vars(first).values(), *vars(second).values()]
    assert len(set(paths)) == 8 and len({os.path.basename(p) for p in paths}) == 8
    assert all(p.endswith(".png") and os.path.isfile(p) for p in paths)
    np.testing.assert_array_equal(np.asarray(Image.open(first.edited)), ran.result.image)
    np.testing.assert_array_equal(np.asarray(Image.open(first.source)), ran.result.source)
    np.testing.assert_array_equal(np.asarray(Image.open(first.hold)), ran.result.hold_image())
    heat = outputs.overlay(ran.result.source, ran.result.heatmap_image())
    np.testing.assert_array_equal(np.asarray(Image.open(first.heatmap)), heat)
    assert not [n for n in os.listdir(os.path.dirname(first.edited)) if not n.endswith(".png")]


def test_requests_share_a_sampler_call_only_when_they_share_its_program(editor, upload_dir):
    def key(layers=(), **changes):
        edit = inputs.parse(editor, _values(upload_dir, layers, **changes), upload_dir, LIMITS)
        return batching.program_key(editor, edit)

    base = key()
    # Per-sample values: same program.
    for same in (
        key(["layer.png"]),
        key(seed=99),
        key(hold_threshold=0.9),
        key(guidance=5.0),
        key(instruction="add a cat"),
    ):
        assert same == base
    # Static settings: a program (and a sampler call) of their own.
    for other in (
        key(steps=4),
        key(reference_strength=1.5),
        key(paste_back=False),
        key(query="blue"),
        key(guidance=1.0),
    ):
        assert other != base
    assert batching.plan([base, key(steps=4), base, base], batch_size=2) == [[0, 2], [3], [1]]


# --- what reaches the sampler -------------------------------------------------------------------

DEFAULTS = dict.fromkeys(
    ["steps", "guidance", "reference_strength", "hold_threshold", "seed", "paste_back"]
)


def _default_request(upload_dir, seed=None):
    """A square upload at the bundle's resolution with every setting left to the bundle."""
    values = _values(upload_dir, **dict(DEFAULTS, seed=seed))
    values[0]["background"] = _file(upload_dir, "square.png")
    return values


@pytest.fixture()
def sampler_calls(editor, monkeypatch):
    """What each sampler call of `editor` gets: (batch, bucket, steps, strength, paste_back,
    tolerance, temperature, any CFG, any query): the arguments that pick its program."""
    calls = []
    run_chunk = editor._run_chunk

    def recorded(requests, bucket, *settings):
        cfg = any(r.guidance > 1 for r in requests)
        query = any(r.query is not None for r in requests)
        calls.append((len(requests), bucket, *settings, cfg, query))
        return run_chunk(requests, bucket, *settings)

    monkeypatch.setattr(editor, "_run_chunk", recorded)
    return calls


def test_every_served_call_runs_the_full_batch(editor, upload_dir, tmp_path, sampler_calls):
    """--max_batch_size 4 (Settings.batch_size): a lone request and three together both reach
    the sampler as a batch of 4 (one program for every load), not as 1 and 3."""
    from editmgt_jax.serving import app

    settings = app.Settings(
        batch_size=4, output_dir=str(tmp_path), upload_dir=upload_dir, limits=LIMITS
    )
    handler = app.EditHandler(editor, settings)
    for seeds in ([1], [1, 2, 3]):
        rows = [_default_request(upload_dir, seed) for seed in seeds]
        sampler_calls.clear()
        answers = handler(*map(list, zip(*rows, strict=True)))
        infos = answers[app.OUTPUT_NAMES.index("info")]
        assert [info["error"] for info in infos] == [None] * len(seeds)
        assert [call[0] for call in sampler_calls] == [4], (seeds, sampler_calls)
        assert [info["batch"] for info in infos] == [dict(requests=len(seeds), size=4)] * len(seeds)


def test_the_server_compiles_its_program_before_it_serves(
    editor, upload_dir, sampler_calls, monkeypatch
):
    """server.start warms up (a sampler call of the default program at the batch size) before
    Gradio binds the port; a default request then runs that same program."""
    import gradio as gr

    from editmgt_jax.serving import app, server

    events = []
    warm_up = batching.warm_up

    def recorded_warm_up(editor, batch_size):
        events.append(("warm_up", batch_size, len(sampler_calls)))
        seconds = warm_up(editor, batch_size)
        events.append(("warmed", len(sampler_calls)))
        return seconds

    def launch(self, **kwargs):  # what binds and serves: not here
        events.append(("launch", kwargs["server_port"]))
        return None, f"http://127.0.0.1:{kwargs['server_port']}/", None

    monkeypatch.setattr(batching, "warm_up", recorded_warm_up)
    monkeypatch.setattr(gr.Blocks, "launch", launch)
    settings = app.Settings(batch_size=4, upload_dir=upload_dir, limits=LIMITS)
    running = server.start(editor, settings, port=7999)
    assert events == [("warm_up", 4, 0), ("warmed", 1), ("launch", 7999)]
    assert running.warm_up_s > 0
    [warmed] = sampler_calls
    assert warmed[0] == 4
    edit = inputs.parse(editor, _default_request(upload_dir), upload_dir, LIMITS)
    [ran] = batching.run_all(editor, [edit], 4)
    assert ran.error is None
    assert sampler_calls == [warmed, warmed]  # the program the warm-up compiled
