"""Serve the editor in the browser, with an HTTP API: paint a mask, move lambda, see the heatmap.

    python -m launch.serve                                   # embedded model, http://127.0.0.1:7860
    python -m launch.serve --checkpoint /ckpt/editmgt --max_batch_size 8 --port 7861
    python -m launch.serve --host 0.0.0.0 --auth_file logins.txt   # other machines: passwords

It binds 127.0.0.1 by default. Another address needs `--auth USER:PASSWORD` (repeatable) or
`--auth_file FILE` (USER:PASSWORD lines), unless `--allow_unauthenticated` is given on purpose. On
a TPU/GPU host, keep the default and forward the port: `ssh -L 7860:127.0.0.1:7860 HOST`, then
open http://127.0.0.1:7860 on your machine.

Concurrent requests are batched (up to --max_batch_size per sampler call, every call padded to
that size, so results do not depend on who else is editing); the default program is compiled
before the server accepts requests. Uploads are capped at --max_upload_mb and --max_pixels.
Prints one JSON line once it serves (url, checkpoint, warm_up_s, ...), then serves until stopped.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os

from absl import app, flags

from launch import cli

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the flags (only when run as a script)."""
    flags.DEFINE_string("checkpoint", None, "Bundle folder (default: the embedded model).")
    flags.DEFINE_string("host", "127.0.0.1", "Address to bind; not loopback needs --auth.")
    flags.DEFINE_integer("port", 7860, "Port.")
    flags.DEFINE_integer("max_batch_size", 4, "Requests per sampler call (calls are padded to it).")
    flags.DEFINE_multi_string("auth", [], "USER:PASSWORD allowed to log in (repeatable).")
    flags.DEFINE_string("auth_file", None, "File of USER:PASSWORD lines allowed to log in.")
    flags.DEFINE_bool(
        "allow_unauthenticated", False, "Serve a non-loopback --host without any login."
    )
    flags.DEFINE_float("max_upload_mb", 32.0, "Largest uploaded file, in MiB.")
    flags.DEFINE_integer("max_pixels", 16_000_000, "Largest image (or mask layer), in pixels.")
    flags.DEFINE_integer("max_steps", 64, "Most decoding steps a request may ask for.")
    flags.DEFINE_string(
        "examples", None, "Jobs JSONL of examples (default: examples/jobs.jsonl if present)."
    )
    flags.DEFINE_string("dtype", None, "Transformer compute dtype, e.g. bfloat16.")
    flags.DEFINE_integer("queue_size", 256, "Most requests waiting; more are refused.")
    flags.DEFINE_integer("keep_outputs_minutes", 60, "Delete uploads and outputs after this long.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    # Before anything imports gradio (editmgt_jax.serving sets it too).
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    if importlib.util.find_spec("gradio") is None:
        raise app.UsageError(
            'launch.serve needs gradio: pip install "editmgt-jax[serve]" '
            "(or pip install -r requirements.txt in a checkout)"
        )
    from editmgt_jax.serving import access

    try:
        logins = access.credentials(
            FLAGS.host, FLAGS.auth, FLAGS.auth_file, FLAGS.allow_unauthenticated
        )
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    if FLAGS.max_batch_size < 1:
        raise app.UsageError(f"--max_batch_size must be >= 1, got {FLAGS.max_batch_size}")
    if FLAGS.max_upload_mb <= 0 or FLAGS.max_pixels < 1 or FLAGS.max_steps < 1:
        raise app.UsageError("--max_upload_mb, --max_pixels and --max_steps must be positive")
    if FLAGS.examples is not None and not os.path.isfile(FLAGS.examples):
        raise app.UsageError(f"--examples {FLAGS.examples!r} does not exist")

    from editmgt_jax.editor import Editor
    from editmgt_jax.serving import app as page
    from editmgt_jax.serving import examples, inputs, server
    from launch.edit import resolve_checkpoint

    checkpoint = resolve_checkpoint(FLAGS.checkpoint)
    try:
        editor = Editor.from_bundle(checkpoint, dtype=FLAGS.dtype, max_pixels=FLAGS.max_pixels)
    except (FileNotFoundError, ValueError) as e:
        raise app.UsageError(f"--checkpoint {checkpoint!r}: {e}") from e
    if editor.random_init:
        logging.warning(
            "%s holds randomly initialised weights: the edits will be noise", checkpoint
        )
    shown = examples.read_examples(FLAGS.examples or examples.DEFAULT_EXAMPLES)
    name = os.path.basename(os.path.normpath(checkpoint))
    settings = page.Settings(
        batch_size=FLAGS.max_batch_size,
        limits=inputs.Limits(max_pixels=FLAGS.max_pixels, max_steps=FLAGS.max_steps),
        examples=shown,
        description=(
            f"Checkpoint `{name}`, {editor.pipeline['resolution']} px. Paint (white brush) where "
            "the edit may happen, write the instruction, press **Edit**."
        ),
        keep_outputs_s=FLAGS.keep_outputs_minutes * 60,
    )
    running = server.start(
        editor,
        settings,
        host=FLAGS.host,
        port=FLAGS.port,
        logins=logins,
        max_upload_bytes=int(FLAGS.max_upload_mb * (1 << 20)),
        queue_size=FLAGS.queue_size,
    )
    print(
        json.dumps(
            dict(
                url=running.url,
                checkpoint=checkpoint,
                max_batch_size=FLAGS.max_batch_size,
                warm_up_s=round(running.warm_up_s, 3),
                examples=len(shown),
                login=logins is not None,
            )
        ),
        flush=True,
    )
    running.blocks.block_thread()


def run() -> None:
    """Entry point for a console script."""
    define_flags()
    cli.run_main(main)


if __name__ == "__main__":
    run()
