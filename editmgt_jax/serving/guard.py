"""What the server's HTTP routes may serve and accept, in front of Gradio's own checks.

An ASGI middleware:
- the file routes (`/gradio_api/file=PATH`, `/gradio_api/file/PATH`) serve only files inside the
  allowed roots (the server's upload/cache folder, which holds its outputs, and the examples'
  folders); a host path such as /etc/passwd, a `..` escape and a URL (which Gradio would fetch
  and relay) are refused with 403;
- the `/gradio_api/proxy=` route (relaying other Gradio apps) is refused;
- a JSON request that names a file by URL ("path": "http://...", which Gradio would download) is
  refused with 400: files come in through the upload route only. JSON bodies over
  `max_json_bytes` are refused with 413.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Any

FILE_ROUTES = ("/gradio_api/file=", "/gradio_api/file/")
REFUSED_ROUTES = ("/gradio_api/proxy=",)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")  # 2+ letters: not a drive letter


def is_inside(path: str, roots: Sequence[str]) -> bool:
    """True if `path` (symlinks and '..' resolved) lies in one of the (resolved) `roots`."""
    real = os.path.realpath(path)
    for root in roots:
        root = os.path.realpath(root)
        if os.path.commonpath([real, root]) == root:
            return True
    return False


def names_a_url(value: Any) -> bool:
    """True if a JSON value holds a file object whose "path" is a URL (scheme:...)."""
    if isinstance(value, dict):
        path = value.get("path")
        if isinstance(path, str) and _SCHEME.match(path):
            return True
        return any(names_a_url(v) for v in value.values())
    if isinstance(value, list):
        return any(names_a_url(v) for v in value)
    return False


async def _respond(send, status: int, message: str) -> None:
    body = json.dumps({"detail": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI middleware (see the module docstring).

    Args:
        app: the ASGI app it wraps.
        roots: folders whose files the file routes may serve.
        max_json_bytes: largest JSON request body.
    """

    def __init__(self, app, roots: Sequence[str], max_json_bytes: int = 1 << 20):
        self.app = app
        self.roots = [os.path.realpath(r) for r in roots]
        self.max_json_bytes = int(max_json_bytes)

    def file_allowed(self, target: str) -> bool:
        return bool(target) and not _SCHEME.match(target) and is_inside(target, self.roots)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if any(route in path for route in REFUSED_ROUTES):
            return await _respond(send, 403, "This server relays no other servers")
        for route in FILE_ROUTES:
            at = path.find(route)
            if at >= 0 and not self.file_allowed(path[at + len(route) :]):
                return await _respond(send, 403, "File not served: only this app's outputs")
        headers = dict(scope.get("headers") or [])
        is_json = headers.get(b"content-type", b"").split(b";")[0].strip() == b"application/json"
        if scope["method"] != "POST" or not is_json:
            return await self.app(scope, receive, send)

        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_json_bytes:
                return await _respond(send, 413, f"JSON body over {self.max_json_bytes} bytes")
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            refused = names_a_url(json.loads(body))
        except ValueError:
            refused = False  # not JSON after all: Gradio answers it
        if refused:
            return await _respond(send, 400, "Files must be uploaded, not named by URL")

        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)
