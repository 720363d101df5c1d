"""gcp-storage-emulator, plus the generation semantics of the real GCS JSON API it lacks.

    python tests/gcs_emulator.py PORT BUCKET    # http://127.0.0.1:PORT until its parent ends

tensorstore's gcs driver (orbax's array writes, OCDBT manifests) needs what the emulator
(2026.7.19) does not do: the `x-goog-generation` header on media downloads, and the
`ifGenerationMatch` / `ifGenerationNotMatch` preconditions on reads, uploads and deletes (412 /
304, as GCS answers). Without them tensorstore fails with "Malformed StorageGeneration". Only
these are added; everything else is the emulator's own.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from http import HTTPStatus

from gcp_storage_emulator import server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

_LOCK = threading.Lock()  # a precondition check and its write happen as one step


def _current(storage, bucket: str, name: str | None) -> str:
    """The object's generation; "0" when it does not exist (GCS's meaning of 0)."""
    try:
        return str(storage.get_file_obj(bucket, name)["generation"]) if name else "0"
    except NotFound:
        return "0"


def _failed(request, current: str, read: bool) -> HTTPStatus | None:
    match = request.query.get("ifGenerationMatch")
    if match and match[0] != current:
        return HTTPStatus.PRECONDITION_FAILED
    not_match = request.query.get("ifGenerationNotMatch")
    if not_match and not_match[0] == current:
        return HTTPStatus.NOT_MODIFIED if read else HTTPStatus.PRECONDITION_FAILED
    return None


def _reading(handler):
    def wrapped(request, response, storage, *args, **kwargs):
        with _LOCK:
            current = _current(storage, request.params["bucket_name"], request.params["object_id"])
            if current != "0":
                status = _failed(request, current, read=True)
                if status is not None:
                    response.status = status
                    return None
                response["x-goog-generation"] = current
            return handler(request, response, storage, *args, **kwargs)

    return wrapped


def _writing(handler, name_of):
    def wrapped(request, response, storage, *args, **kwargs):
        with _LOCK:
            current = _current(storage, request.params["bucket_name"], name_of(request))
            status = _failed(request, current, read=False)
            if status is not None:
                response.status = status
                return None
            return handler(request, response, storage, *args, **kwargs)

    return wrapped


def patch() -> None:
    upload_name = lambda r: (r.query.get("name") or [None])[0]
    replaced = {
        objects.download: _reading(objects.download),
        objects.get: _reading(objects.get),
        objects.insert: _writing(objects.insert, upload_name),
        objects.delete: _writing(objects.delete, lambda r: r.params["object_id"]),
    }
    for _, handlers in server.HANDLERS:
        for method, handler in handlers.items():
            handlers[method] = replaced.get(handler, handler)
    objects.insert = replaced[objects.insert]  # the router also calls it by name


def main(port: int, bucket: str) -> None:
    patch()
    emulator = server.create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
    emulator.start()
    parent = os.getppid()
    while os.getppid() == parent:  # ends with the process that started it
        time.sleep(0.5)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
