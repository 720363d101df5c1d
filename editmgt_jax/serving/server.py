"""Starts the page: warm-up compile, Gradio's queue, and a launch that stays on this machine.

Offline by construction: analytics off (`editmgt_jax.serving` sets GRADIO_ANALYTICS_ENABLED=False
before gradio is imported, and the Blocks say so too), no share link, no server-side rendering
(Node), no MCP server, no monitoring page, no run history (which can upload to a Hugging Face
bucket); the page's fonts and scripts come from this server. `RequestGuard` limits what the
routes serve and accept; uploads are capped at `max_upload_bytes`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket

import gradio as gr
from gradio.utils import get_upload_folder
from starlette.middleware import Middleware

from editmgt_jax.serving import app, batching, guard

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Server:
    """A running server: its page, URL and the folders it reads and writes."""

    blocks: gr.Blocks
    url: str
    settings: app.Settings
    warm_up_s: float

    def close(self) -> None:
        self.blocks.close()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (for tests and benchmarks)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start(
    editor,
    settings: app.Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    logins: list[tuple[str, str]] | None = None,
    max_upload_bytes: int = 32 << 20,
    queue_size: int = 256,
    warm_up: bool = True,
) -> Server:
    """Warms up, builds and launches the page (returns once it serves; `blocks.block_thread()`
    waits). `settings.output_dir` / `upload_dir` left empty are set to Gradio's upload folder
    (GRADIO_TEMP_DIR, else <tmp>/gradio) and its editmgt_outputs/ subfolder."""
    upload_dir = settings.upload_dir or get_upload_folder()
    settings = dataclasses.replace(
        settings,
        upload_dir=upload_dir,
        output_dir=settings.output_dir or os.path.join(upload_dir, "editmgt_outputs"),
    )
    seconds = 0.0
    if warm_up:
        seconds = batching.warm_up(editor, settings.batch_size)
        logger.info("Warm-up compile at batch %d: %.1f s", settings.batch_size, seconds)
    blocks = app.build(editor, settings)
    blocks.queue(max_size=queue_size, default_concurrency_limit=1)
    example_dirs = sorted({os.path.dirname(e.image) for e in settings.examples})
    roots = [upload_dir, *example_dirs]
    _, url, _ = blocks.launch(
        server_name=host,
        server_port=port,
        share=False,
        auth=logins,
        max_file_size=max_upload_bytes,
        allowed_paths=example_dirs,
        prevent_thread_lock=True,
        show_error=False,
        quiet=True,
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
        enable_monitoring=False,
        run_history=False,
        footer_links=["api"],
        app_kwargs={"middleware": [Middleware(guard.RequestGuard, roots=roots)]},
        css=app.CSS,
    )
    return Server(blocks=blocks, url=url, settings=settings, warm_up_s=seconds)
