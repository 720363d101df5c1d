"""The server's `/edit` API through gradio_client: edits with and without a mask, bad inputs,
batching (a batched request equals the same request alone), the file routes and logins.

One server per module (a random smoke bundle, 32 px, batch size 4, warm-up compiled); every edit
uses 48x48 inputs and the bundle's default steps and guidance, so they all run the warm-up's
compiled program.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import json
import logging
import os

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AuthenticationError
from PIL import Image

from editmgt_jax.editor import Editor
from editmgt_jax.serving import app, inputs, server

SIZE = 48
BATCH = 4


@pytest.fixture(scope="module")
def editor(smoke_bundle):
    return Editor.from_bundle(smoke_bundle)


@pytest.fixture(scope="module")
def gradio_dir(tmp_path_factory):
    """Gradio's upload/cache folder for this module's servers (GRADIO_TEMP_DIR)."""
    folder = tmp_path_factory.mktemp("gradio")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GRADIO_TEMP_DIR", str(folder))
        yield str(folder)


@pytest.fixture(scope="module")
def running(editor, gradio_dir):
    settings = app.Settings(batch_size=BATCH, limits=inputs.Limits(max_pixels=20_000))
    started = server.start(editor, settings, port=server.free_port(), max_upload_bytes=150_000)
    yield started
    started.close()


@pytest.fixture(scope="module")
def client(running, tmp_path_factory):
    return Client(
        running.url, download_files=str(tmp_path_factory.mktemp("downloads")), verbose=False
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    paths = {}
    for i in range(4):
        paths[f"image{i}"] = str(folder / f"image{i}.png")
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(
            paths[f"image{i}"]
        )
    layer = np.zeros((SIZE, SIZE, 4), np.uint8)
    layer[10:26, 14:34] = 255  # a white, opaque stroke
    paths["layer"] = str(folder / "layer.png")
    Image.fromarray(layer).save(paths["layer"])
    paths["big_layer"] = str(folder / "big_layer.png")
    Image.fromarray(np.kron(layer, np.ones((2, 2, 1), np.uint8))).save(paths["big_layer"])
    paths["notes"] = str(folder / "notes.png")
    with open(paths["notes"], "w") as f:
        f.write("this is not an image")
    paths["too_many_pixels"] = str(folder / "too_many_pixels.png")
    Image.fromarray(np.zeros((120, 200, 3), np.uint8)).save(paths["too_many_pixels"])
    paths["too_large"] = str(folder / "too_large.png")  # > 150 kB: refused at upload
    Image.fromarray(rng.integers(0, 256, (250, 250, 3), dtype=np.uint8)).save(paths["too_large"])
    return paths


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def request(files, image="image0", layers=(), instruction="make it blue", **settings):
    """The /edit arguments, in order (steps/guidance/... default to the bundle's)."""
    value = None
    if image is not None:
        value = dict(
            background=handle_file(files[image]),
            layers=[handle_file(files[name]) for name in layers],
            composite=None,
        )
    return (
        value,
        instruction,
        settings.get("query", ""),
        settings.get("steps", 8),
        settings.get("guidance", 3.0),
        settings.get("reference_strength", 1.0),
        settings.get("hold_threshold", 0.3),
        settings.get("seed", 0),
        settings.get("paste_back", True),
    )


def edit(client, args):
    return client.predict(*args, api_name="/edit")


def test_an_edit_with_a_painted_mask_changes_no_pixel_outside_it(client, files):
    before_after, edited, heatmap, hold, info = edit(
        client, request(files, layers=["layer"], hold_threshold=0.0, seed=3)
    )
    assert info["error"] is None, info
    source, out = pixels(files["image0"]), pixels(edited)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[10:26, 14:34] = True
    assert out.shape == source.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~mask], source[~mask])  # paste-back: exact pixels
    assert (out[mask] != source[mask]).any()  # random weights change the masked tokens
    np.testing.assert_array_equal(pixels(before_after[0]), source)
    np.testing.assert_array_equal(pixels(before_after[1]), out)
    assert pixels(heatmap).shape == (SIZE, SIZE, 3) and pixels(hold).shape == (SIZE, SIZE)
    assert info["mask_box"] == [10, 14, 26, 34] and info["settings"]["mask"] == "painted"
    assert info["settings"]["seed"] == 3 and info["settings"]["hold_threshold"] == 0.0
    assert info["batch"]["size"] == BATCH and info["size"] == [SIZE, SIZE]
    assert 0.0 <= info["held_fraction"] <= 1.0 and info["seconds"] > 0


def test_an_edit_without_a_mask_may_change_the_whole_image(client, files):
    _, edited, _, hold, info = edit(client, request(files, hold_threshold=0.0, paste_back=False))
    assert info["error"] is None and info["settings"]["mask"] == "whole image"
    source, out = pixels(files["image0"]), pixels(edited)
    assert out.shape == source.shape
    changed = (out != source).any(axis=-1)
    # Without a mask, lambda 0 and paste-back off, changes are not confined to one region.
    assert changed[: SIZE // 2].any() and changed[SIZE // 2 :].any()
    assert info["held_fraction"] == 0.0 and not pixels(hold).any()


def test_a_mask_of_another_size_is_resized_with_a_warning(client, files):
    _, edited, _, _, info = edit(client, request(files, layers=["big_layer"]))
    assert info["error"] is None and info["mask_box"] == [10, 14, 26, 34]
    assert any("96x96" in w and "resized" in w for w in info["warnings"])
    assert pixels(edited).shape == (SIZE, SIZE, 3)


@pytest.mark.parametrize(
    "args, message",
    [
        (dict(image=None), "No image"),
        (dict(instruction="  "), "instruction is empty"),
        (dict(image="notes"), "not a readable image"),
        (dict(image="too_many_pixels"), "over the limit of 20000"),
        (dict(hold_threshold=1.5), r"lambda (hold_threshold) must be in [0, 1]"),
        (dict(steps=1000), "steps must be a whole number"),
    ],
)
def test_bad_inputs_give_errors_and_the_server_keeps_serving(client, files, args, message):
    outs = edit(client, request(files, **args))
    assert outs[:4] == (None, None, None, None)
    assert message in outs[4]["error"]
    assert edit(client, request(files))[4]["error"] is None


def _show_error(client, running, info) -> dict:
    """Runs the page's follow-up step (`app.report`, which shows info's error) as the browser
    does, through the queue (gradio_client refuses the private step); returns its last
    message."""
    config = client.config
    components = config["components"]
    (info_id,) = [c["id"] for c in components if c.get("props", {}).get("elem_id") == "info"]
    (index,) = [
        d.get("id", i)
        for i, d in enumerate(config["dependencies"])
        if d["inputs"] == [info_id] and not d["outputs"]
    ]
    base, session = running.url.rstrip("/") + "/gradio_api/queue/", "report-test"
    body = dict(data=[info], fn_index=index, session_hash=session, event_data=None)
    assert httpx.post(base + "join", json=body).status_code == 200
    with httpx.stream("GET", base + "data", params=dict(session_hash=session), timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[len("data:") :])
                if message.get("msg") == "process_completed":
                    return message
    raise AssertionError("the queue closed before the step completed")


def test_a_rejected_request_logs_one_line_and_an_internal_error_a_traceback(
    client, running, files, caplog, capfd, monkeypatch
):
    """What the page does on Edit (the /edit call, then the step that shows its error): a request
    without an image is one warning line in the server log; a surprise in the server is logged
    with its traceback. Neither gets Gradio's traceback of the error shown on the page."""
    caplog.set_level(logging.INFO)
    capfd.readouterr()
    info = edit(client, request(files, image=None))[4]
    shown = _show_error(client, running, info)
    assert not shown["success"] and "No image" in shown["output"]["error"], shown
    rejected = [r for r in caplog.records if r.name.startswith("editmgt_jax")]
    assert [(r.levelno, r.getMessage()) for r in rejected] == [
        (logging.WARNING, "rejected request: No image: upload an image to edit")
    ]
    assert rejected[0].exc_info is None
    assert "Traceback" not in capfd.readouterr().err

    caplog.clear()

    def surprise(*args, **kwargs):
        raise RuntimeError("a bug in the server")

    monkeypatch.setattr(inputs, "parse", surprise)
    info = edit(client, request(files))[4]
    assert "a bug in the server" in info["error"]
    shown = _show_error(client, running, info)
    assert not shown["success"] and "a bug in the server" in shown["output"]["error"], shown
    (failed,) = [r for r in caplog.records if r.name.startswith("editmgt_jax")]
    assert failed.levelno == logging.ERROR and failed.exc_info is not None
    assert "RuntimeError" in caplog.text and "a bug in the server" in caplog.text


def test_an_oversized_upload_is_refused_and_the_server_keeps_serving(client, files):
    with pytest.raises(Exception, match="413|too large|exceeds"):
        edit(client, request(files, image="too_large"))
    assert edit(client, request(files))[4]["error"] is None


def test_concurrent_requests_are_batched_and_equal_to_the_same_requests_alone(client, files):
    jobs = [
        request(files, image="image1", seed=11),
        request(files, image="image2", layers=["layer"], instruction="add a cat", seed=12),
        request(files, image="image3", instruction="remove it", hold_threshold=0.6, seed=13),
        request(files, image="image0", guidance=4.5, paste_back=False, seed=14),
        request(files, image="image1", seed=11),  # the same edit twice
    ]
    alone = [edit(client, job) for job in jobs]
    assert all(a[4]["batch"]["requests"] == 1 for a in alone)
    bad = request(files, instruction="")
    with concurrent.futures.ThreadPoolExecutor(len(jobs) + 1) as pool:
        futures = [pool.submit(edit, client, job) for job in [*jobs, bad]]
        together = [f.result() for f in futures]
    assert "instruction is empty" in together[-1][4]["error"]  # and fails no batch-mate
    assert max(t[4]["batch"]["requests"] for t in together[:-1]) > 1
    for single, batched in zip(alone, together, strict=False):
        assert batched[4]["error"] is None
        for kind in (1, 2, 3):  # edited, heatmap, hold: bit-identical
            np.testing.assert_array_equal(pixels(batched[kind]), pixels(single[kind]))


# --- what the routes serve ----------------------------------------------------------------------


def test_the_file_route_serves_the_outputs_and_nothing_else(client, files, running):
    edit(client, request(files))
    output_dir = running.settings.output_dir
    folder = os.path.join(output_dir, sorted(os.listdir(output_dir))[0])
    output = os.path.join(folder, os.listdir(folder)[0])
    base = running.url.rstrip("/") + "/gradio_api/file="
    assert httpx.get(base + output).status_code == 200
    for path in ("/etc/passwd", f"{output_dir}/%2E%2E/%2E%2E/etc/passwd", "README.md"):
        response = httpx.get(base + path)
        assert response.status_code == 403 and "root:" not in response.text, path
    assert httpx.get(base + "http://93.184.216.34/a.png").status_code == 403
    assert httpx.get(running.url.rstrip("/") + "/gradio_api/file/etc/passwd").status_code == 403


def test_files_named_by_url_are_refused(client, running):
    body = {
        "data": [{"background": {"path": "http://93.184.216.34/a.png"}, "layers": []}, "x"],
        "fn_index": 0,
        "session_hash": "abc",
    }
    response = httpx.post(running.url.rstrip("/") + "/gradio_api/queue/join", json=body)
    assert response.status_code == 400 and "uploaded" in response.text


def test_a_server_with_logins_refuses_anonymous_clients(editor, running, files, tmp_path):
    settings = app.Settings(batch_size=BATCH)
    guarded = server.start(
        editor, settings, port=server.free_port(), logins=[("ann", "pw")], warm_up=False
    )
    try:
        assert httpx.get(guarded.url + "config").status_code == 401
        with pytest.raises(AuthenticationError, match="credentials were not provided"):
            Client(guarded.url, verbose=False)
        # A wrong password: gradio_client raises ValueError (or AuthenticationError on a 401).
        with pytest.raises((AuthenticationError, ValueError), match="Could not login"):
            Client(guarded.url, auth=("ann", "wrong"), verbose=False)
        logged_in = Client(
            guarded.url, auth=("ann", "pw"), download_files=str(tmp_path), verbose=False
        )
        assert edit(logged_in, request(files))[4]["error"] is None
    finally:
        guarded.close()


@pytest.mark.slow
def test_the_embedded_model_edits_through_the_api(gradio_dir, tmp_path):
    from data_pipelines.synthetic import make_example
    from editmgt_jax.assets import DEFAULT_MODEL

    example = make_example(seed=4242, index=3, size=64, split="heldout")
    paths = dict(image=str(tmp_path / "scene.png"), layer=str(tmp_path / "layer.png"))
    Image.fromarray(example.source).save(paths["image"])
    layer = np.zeros((64, 64, 4), np.uint8)
    layer[example.mask > 0] = 255
    Image.fromarray(layer).save(paths["layer"])
    started = server.start(
        Editor.from_bundle(DEFAULT_MODEL), app.Settings(batch_size=2), port=server.free_port()
    )
    try:
        default = Client(started.url, download_files=str(tmp_path / "dl"), verbose=False)
        args = request(paths, image="image", layers=["layer"], instruction=example.instruction)
        args = (*args[:3], None, None, None, None, 0, True)  # the bundle's sampler defaults
        _, edited, _, _, info = edit(default, args)
        assert info["error"] is None and info["settings"]["steps"] == 12
        outside = example.mask == 0
        np.testing.assert_array_equal(pixels(edited)[outside], example.source[outside])
    finally:
        started.close()


def test_the_load_benchmark_runs_and_checks_against_the_same_edits_alone(
    smoke_bundle, gradio_dir, tmp_path, monkeypatch
):
    """benchmarks/serve_load.py end to end on the smoke bundle (its own server): 1 and 2
    concurrent clients of one request each, every edit compared with the same edit alone."""
    import tempfile
    import types

    from benchmarks import serve_load

    # main() sets these for its server; the test's values are restored afterwards.
    monkeypatch.setenv("GRADIO_TEMP_DIR", gradio_dir)
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # its work folder goes here
    flags = dict(checkpoint=smoke_bundle, clients=["1", "2"], requests_per_client=1, size=SIZE)
    monkeypatch.setattr(serve_load, "FLAGS", types.SimpleNamespace(max_batch_size=BATCH, **flags))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        serve_load.main(["serve_load"])
    lines = [json.loads(line) for line in printed.getvalue().splitlines() if line[:1] == "{"]
    assert [line["clients"] for line in lines] == [1, 2]
    for line in lines:
        assert line["requests"] == line["clients"] and line["failed"] == 0, line
        assert line["equal_to_alone"] is True, line
        assert 1 <= line["largest_call"] <= line["clients"] and line["max_batch_size"] == BATCH
        assert line["edits_per_s"] > 0 and 0 < line["latency_s"]["p50"] <= line["seconds"]
    jobs = serve_load.make_jobs(str(tmp_path), 2, SIZE)  # what it sent: distinct, half masked
    assert len({(job["instruction"], job["seed"]) for job in jobs}) == 2
    assert [len(job["layers"]) for job in jobs] == [0, 1]
