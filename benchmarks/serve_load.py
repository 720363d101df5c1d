"""Load test of `launch.serve`: N concurrent gradio_client clients against one server.

    python -m benchmarks.serve_load                              # embedded model, N = 1, 4, 16
    python -m benchmarks.serve_load --checkpoint /ckpt/editmgt --clients 1,4,16,64 \
        --max_batch_size 8 --requests_per_client 8

Starts a server on 127.0.0.1 (a free port, warm-up compiled, its own Gradio folder), makes one
distinct edit per (client, request) — synthetic 64 px scenes, own seeds and masks — and first runs
each alone (one request at a time) as the reference. Then, for every N, N client threads (each
its own `gradio_client.Client`) send their requests back to back; every result must succeed and
be bit-identical (edited image, heatmap, hold mask) to the same edit made alone. Prints one JSON
line per N: requests, seconds, throughput (edits/s), latency percentiles (s) and the largest
number of requests that shared one sampler call.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import threading
import time

import numpy as np
from absl import app, flags
from PIL import Image

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the flags (only when run as a script)."""
    flags.DEFINE_string("checkpoint", None, "Bundle folder (default: the embedded model).")
    flags.DEFINE_list("clients", ["1", "4", "16"], "Numbers of concurrent clients.")
    flags.DEFINE_integer("requests_per_client", 4, "Requests each client sends, one at a time.")
    flags.DEFINE_integer("max_batch_size", 4, "The server's --max_batch_size.")
    flags.DEFINE_integer("size", 64, "Side in pixels of the test scenes.")


def make_jobs(folder: str, count: int, size: int) -> list[dict]:
    """`count` distinct edits: a synthetic scene, its instruction, a seed and (every other one) a
    painted mask layer."""
    from data_pipelines.synthetic import make_example

    jobs = []
    for i in range(count):
        example = make_example(seed=777, index=i, size=size, split="heldout")
        image = os.path.join(folder, f"scene{i}.png")
        Image.fromarray(example.source).save(image)
        layers = []
        if i % 2:
            layer = np.zeros((size, size, 4), np.uint8)
            layer[example.mask > 0] = 255
            layers = [os.path.join(folder, f"mask{i}.png")]
            Image.fromarray(layer).save(layers[0])
        jobs.append(dict(image=image, layers=layers, instruction=example.instruction, seed=i))
    return jobs


def call(client, job: dict) -> tuple[float, tuple]:
    from gradio_client import handle_file

    value = dict(
        background=handle_file(job["image"]),
        layers=[handle_file(p) for p in job["layers"]],
        composite=None,
    )
    start = time.perf_counter()
    # Unset settings (None) take the bundle's defaults.
    out = client.predict(
        value, job["instruction"], "", None, None, None, None, job["seed"], True, api_name="/edit"
    )
    return time.perf_counter() - start, out


def pixels(paths: tuple) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) for p in paths[1:4]]  # edited, heatmap, hold


def run_clients(url: str, jobs: list[dict], clients: int, downloads: str) -> tuple[list, float]:
    """[(job index, latency s, outputs)] for `clients` threads sending their share of `jobs`."""
    from gradio_client import Client

    per_client = len(jobs) // clients
    results, errors = [], []
    lock = threading.Lock()

    def work(c: int) -> None:
        try:
            client = Client(url, download_files=downloads, verbose=False)
            for i in range(c * per_client, (c + 1) * per_client):
                seconds, out = call(client, jobs[i])
                with lock:
                    results.append((i, seconds, out))
        except Exception as e:  # reported, and the run counts as failed
            with lock:
                errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(c,)) for c in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed: {errors[:3]}")
    return results, time.perf_counter() - start


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    counts = [int(n) for n in FLAGS.clients]
    if not counts or min(counts) < 1:
        raise app.UsageError("--clients must list positive numbers")
    work_dir = tempfile.mkdtemp(prefix="serve_load_")
    os.environ["GRADIO_TEMP_DIR"] = os.path.join(work_dir, "gradio")  # before gradio is imported
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

    import jax

    from editmgt_jax.editor import Editor
    from editmgt_jax.serving import app as page
    from editmgt_jax.serving import server
    from launch.edit import resolve_checkpoint

    checkpoint = resolve_checkpoint(FLAGS.checkpoint)
    editor = Editor.from_bundle(checkpoint)
    running = server.start(
        editor,
        page.Settings(batch_size=FLAGS.max_batch_size),
        port=server.free_port(),
        queue_size=4096,
    )
    try:
        jobs = make_jobs(work_dir, max(counts) * FLAGS.requests_per_client, FLAGS.size)
        downloads = os.path.join(work_dir, "downloads")
        alone, _ = run_clients(running.url, jobs, 1, downloads)
        reference = {i: pixels(out) for i, _, out in alone}
        for clients in counts:
            share = jobs[: clients * FLAGS.requests_per_client]
            results, seconds = run_clients(running.url, share, clients, downloads)
            failed = [i for i, _, out in results if out[4].get("error")]
            different = [
                i
                for i, _, out in results
                if i not in failed
                and not all(
                    np.array_equal(a, b) for a, b in zip(pixels(out), reference[i], strict=True)
                )
            ]
            latencies = np.array([s for _, s, _ in results])
            print(
                json.dumps(
                    dict(
                        clients=clients,
                        requests=len(results),
                        failed=len(failed),
                        equal_to_alone=not different and not failed,
                        seconds=round(seconds, 3),
                        edits_per_s=round(len(results) / seconds, 3),
                        latency_s={
                            f"p{q}": round(float(np.percentile(latencies, q)), 3)
                            for q in (50, 90, 99)
                        },
                        largest_call=max(
                            out[4]["batch"]["requests"]
                            for _, _, out in results
                            if "batch" in out[4]
                        ),
                        max_batch_size=FLAGS.max_batch_size,
                        checkpoint=checkpoint,
                        device=jax.devices()[0].device_kind,
                        machine=platform.processor() or platform.machine(),
                    )
                ),
                flush=True,
            )
    finally:
        running.close()


if __name__ == "__main__":
    define_flags()
    app.run(main)
