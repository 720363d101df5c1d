"""A real browser drives the page that `python -m launch.serve` serves.

Headless Chromium through Debian's chromedriver (`.ci/run` installs both; nothing is downloaded):
upload an image, paint a stroke on the ImageEditor, type the instruction, move lambda, tick
paste-back, press Edit, read the edited image back through its URL in the page and check that no
pixel outside the painted stroke changed. Every request the page made went to this machine
(Chrome's performance log of the page's network events). A bad input shows its message in the page
and the page keeps working.

The server is a subprocess on a random smoke bundle (32 px). Set EDITMGT_SERVE_CHECKPOINT to a
bundle folder (or `default` for the embedded model) and EDITMGT_SERVE_SCREENSHOT to a PNG path to
make the documentation's screenshot (docs/serve_screenshot.png) with these same steps; then the
page lists the shipped `examples/` and the painted edit is the colour example's (its cross
painted over, "the red cross should be green").
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from data_pipelines.synthetic import make_example
from editmgt_jax.assets import DEFAULT_MODEL
from editmgt_jax.serving import server
from editmgt_jax.serving.inputs import painted_pixels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
START_TIMEOUT_S = 600  # a bound for a loaded machine, not a timing
EDIT_TIMEOUT_S = 240
SCREENSHOT = os.environ.get("EDITMGT_SERVE_SCREENSHOT")
# The screenshot's edit: the shipped colour example, a zigzag stroke over its cross (screen
# offsets from the canvas centre, about 6 per image pixel; the cross sits right of centre,
# image rows 25-46 and columns 33-60).
SCREENSHOT_EDIT = (
    os.path.join(ROOT, "examples", "color.png"),
    "the red cross should be green",
    [(5, -40), (175, -40), (175, -15), (5, -15), (5, 10), (175, 10), (175, 35), (5, 35),
     (5, 60), (175, 60), (175, 85), (5, 85)],
)  # fmt: skip


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Two synthetic scenes and a jobs JSONL naming them as examples (in a tmp folder)."""
    root = tmp_path_factory.mktemp("repo")
    (root / "examples").mkdir()
    lines = []
    for index in (2, 3):  # a replace and a colour edit
        example = make_example(seed=4242, index=index, size=64, split="heldout")
        name = f"scene{index}.png"
        Image.fromarray(example.source).save(root / "examples" / name)
        lines.append(json.dumps(dict(image=f"examples/{name}", instruction=example.instruction)))
    (root / "examples" / "jobs.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def served(smoke_bundle, scenes, tmp_path_factory):
    """The URL of a `launch.serve` subprocess (its own GRADIO_TEMP_DIR)."""
    checkpoint = os.environ.get("EDITMGT_SERVE_CHECKPOINT", smoke_bundle)
    checkpoint = DEFAULT_MODEL if checkpoint == "default" else checkpoint
    log = open(tmp_path_factory.mktemp("serve") / "serve.log", "w+")
    env = dict(os.environ, GRADIO_TEMP_DIR=str(tmp_path_factory.mktemp("gradio")))
    examples = str(scenes / "examples" / "jobs.jsonl")
    if SCREENSHOT:
        examples = os.path.join(ROOT, "examples", "jobs.jsonl")
    command = [
        sys.executable, "-m", "launch.serve", "--checkpoint", checkpoint,
        "--port", str(server.free_port()), "--max_batch_size", "2", "--examples", examples,
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True
    )
    first_line: list[str] = []
    reader = threading.Thread(
        target=lambda: first_line.append(process.stdout.readline()), daemon=True
    )
    reader.start()
    reader.join(START_TIMEOUT_S)
    try:
        if not first_line or not first_line[0].strip():
            log.seek(0)
            pytest.fail(f"launch.serve did not start:\n{log.read()[-4000:]}")
        started = json.loads(first_line[0])
        with open(examples) as f:
            expected = sum(1 for line in f if line.strip())
        assert started["examples"] == expected and started["login"] is False
        yield started["url"]
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--enable-unsafe-swiftshader",
        "--window-size=1400,1700",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def requested_urls(driver) -> list[str]:
    """URLs of every request the page sent since the last call (CDP Network events)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def assert_all_local(urls: list[str]) -> None:
    assert urls, "no request was recorded"
    for url in urls:
        parsed = urllib.parse.urlparse(url)
        assert parsed.scheme in ("data", "blob") or parsed.hostname in LOCAL_HOSTS, url


def open_page(driver, url: str) -> None:
    driver.get(url)
    WebDriverWait(driver, 120).until(lambda d: d.execute_script("return !!window.editor"))
    # The ImageEditor's canvas (window.editor, Gradio's own handle) takes uploads once ready.
    ready = "const done = arguments[arguments.length - 1]; window.editor.ready.then(() => done(1));"
    driver.execute_async_script(ready)


def zoom(driver) -> str:
    return "".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, "#image .zoom-number"))


def upload(driver, path: str, attempts: int = 3) -> None:
    """Uploads through the ImageEditor's file input; the canvas zooms to fit once the image is
    in (on a loaded machine a first upload right after start-up is sometimes dropped: retried)."""
    for _ in range(attempts):
        driver.find_element(By.CSS_SELECTOR, "#image input[type=file]").send_keys(path)
        try:
            WebDriverWait(driver, 60).until(lambda d: zoom(d) not in ("", "45%"))
            return
        except TimeoutException:
            continue
    raise AssertionError(f"the page did not take the upload of {path}")


def paint(driver, offsets: list[tuple[int, int]]) -> None:
    """Drags the brush through screen offsets from the canvas centre."""
    driver.find_element(By.CSS_SELECTOR, "#image button[aria-label=Brush]").click()
    canvas = driver.find_element(By.CSS_SELECTOR, "#image canvas")
    actions = ActionChains(driver, duration=30)
    actions.move_to_element_with_offset(canvas, *offsets[0]).click_and_hold()
    for (x0, y0), (x1, y1) in zip(offsets, offsets[1:], strict=False):
        actions.move_by_offset(x1 - x0, y1 - y0)
    actions.release().perform()


def page_mask(driver) -> np.ndarray:
    """bool [H, W]: the painted pixels of the layers the page will send (same rule as the server)."""
    script = """
        const done = arguments[arguments.length - 1];
        window.editor.get_blobs().then(async (blobs) => {
            const out = [];
            for (const layer of blobs.layers) {
                if (!layer) continue;
                const bytes = new Uint8Array(await layer.arrayBuffer());
                let text = "";
                for (const b of bytes) text += String.fromCharCode(b);
                out.push(btoa(text));
            }
            done(out);
        });
    """
    layers = driver.execute_async_script(script)
    masks = [
        painted_pixels(np.asarray(Image.open(io.BytesIO(base64.b64decode(x))).convert("RGBA")))
        for x in layers
    ]
    return np.logical_or.reduce(masks)


def image_at(url: str) -> np.ndarray:
    with urllib.request.urlopen(url, timeout=30) as response:
        return np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))


def info_box(driver) -> str:
    return driver.find_element(By.ID, "info").text


def test_a_painted_edit_in_the_browser_keeps_every_pixel_outside_the_stroke(
    browser, served, scenes
):
    open_page(browser, served)
    source_path = str(scenes / "examples" / "scene2.png")
    instruction, stroke = "make the shape blue", [(-50, -20), (-20, -10), (10, 0), (40, 10)]
    if SCREENSHOT:
        source_path, instruction, stroke = SCREENSHOT_EDIT
    upload(browser, source_path)
    paint(browser, stroke)
    mask = page_mask(browser)
    source = np.asarray(Image.open(source_path).convert("RGB"))
    assert mask.shape == source.shape[:2] and 0 < mask.mean() < 0.9

    browser.find_element(By.CSS_SELECTOR, "#instruction textarea").send_keys(instruction)
    slider = browser.find_element(By.CSS_SELECTOR, "#hold_threshold input[type=range]")
    start = float(slider.get_attribute("value"))
    slider.send_keys(*[Keys.ARROW_RIGHT] * 10)  # move lambda up by 10 steps of 0.01
    moved = round(start + 0.1, 2)
    assert float(slider.get_attribute("value")) == pytest.approx(moved)
    paste_back = browser.find_element(By.CSS_SELECTOR, "#paste_back input[type=checkbox]")
    if not paste_back.is_selected():
        paste_back.click()
    browser.find_element(By.ID, "run").click()

    WebDriverWait(browser, EDIT_TIMEOUT_S).until(lambda d: "held_fraction" in info_box(d))
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#edited img[src]"))
    edited = image_at(browser.find_element(By.CSS_SELECTOR, "#edited img").get_attribute("src"))
    assert edited.shape == source.shape
    np.testing.assert_array_equal(edited[~mask], source[~mask])  # not one pixel outside changed
    info = "".join(info_box(browser).split())  # the JSON view puts every token on a line
    for text in (f'"hold_threshold":{moved}', '"paste_back":true', '"mask":"painted"'):
        assert text in info, (text, info)
    if SCREENSHOT:
        browser.execute_script("window.scrollTo(0, 0)")
        time.sleep(2)  # let the before/after slider and the heatmaps render
        browser.save_screenshot(SCREENSHOT)
    assert_all_local(requested_urls(browser))


def test_a_bad_input_shows_its_message_and_the_page_keeps_working(browser, served):
    open_page(browser, served)
    requested_urls(browser)  # start the log afresh
    examples = browser.find_elements(
        By.CSS_SELECTOR, ".gallery-item, button.gallery-item, tr.tr-body"
    )
    assert examples, "the examples are not on the page"
    examples[0].click()
    textbox = browser.find_element(By.CSS_SELECTOR, "#instruction textarea")
    WebDriverWait(browser, 30).until(lambda d: textbox.get_attribute("value"))
    WebDriverWait(browser, 60).until(lambda d: zoom(d) not in ("", "45%"))
    textbox.send_keys(Keys.CONTROL, "a")
    textbox.send_keys(Keys.DELETE)
    browser.find_element(By.ID, "run").click()
    WebDriverWait(browser, EDIT_TIMEOUT_S).until(
        lambda d: "instruction is empty" in d.find_element(By.TAG_NAME, "body").text
    )
    textbox.send_keys("make it red")  # the next request from the same page runs
    browser.find_element(By.ID, "run").click()
    WebDriverWait(browser, EDIT_TIMEOUT_S).until(lambda d: "held_fraction" in info_box(d))
    assert_all_local(requested_urls(browser))
