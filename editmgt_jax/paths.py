"""One path layer for local folders and object-store URLs (`gs://bucket/run`, via fsspec/gcsfs).

Local paths take exactly the code they always took (`os`, `open`, `editmgt_jax.atomic`); a URL
(`scheme://...`) goes through fsspec. For `gs://` that is gcsfs's JSON-API client
(`gcsfs.core.GCSFileSystem`), registered here for fsspec and so also for orbax's `etils.epath`:
gcsfs's default experimental class first probes each bucket's type over gRPC, which costs 60 s per
call against a plain-HTTP emulator (docs/data_at_scale.md, "Cloud Storage").

Object stores have no folders and no rename: `makedirs` is a no-op there, and a small file's
atomic write is one upload (a reader sees the old object or the whole new one).
"""

from __future__ import annotations

import glob as _glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from editmgt_jax.atomic import atomic_path, make_temp_dir, replace_folder

_GCS = "gcsfs.core.GCSFileSystem"
_registered = False


def register_gcs() -> None:
    """Makes fsspec's gs:// (and so orbax's epath) gcsfs's JSON-API client; idempotent. fsspec is
    imported only here and for URLs: local paths (and Beam workers) need no fsspec."""
    global _registered
    if _registered:
        return
    import fsspec

    for protocol in ("gs", "gcs"):
        fsspec.register_implementation(protocol, _GCS, clobber=True)
        cls = fsspec.registry.get(protocol)  # already imported: replace the class object too
        if cls is not None and f"{cls.__module__}.{cls.__qualname__}" != _GCS:
            from gcsfs.core import GCSFileSystem

            fsspec.register_implementation(protocol, GCSFileSystem, clobber=True)
    _registered = True


def is_url(path: str | os.PathLike) -> bool:
    """True for `scheme://...` (gs://, s3://, memory://); False for local paths."""
    return "://" in os.fspath(path)


def _fs(url: str):
    register_gcs()
    import fsspec

    fs, _ = fsspec.core.url_to_fs(url)
    return fs


def join(base: str, *parts: str) -> str:
    """`os.path.join` locally; '/'-joined for a URL."""
    if not is_url(base):
        return os.path.join(base, *parts)
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def abspath(path: str) -> str:
    """`os.path.abspath` locally; a URL unchanged (less a trailing '/')."""
    return path.rstrip("/") if is_url(path) else os.path.abspath(path)


def basename(path: str) -> str:
    return os.path.basename(path.rstrip("/") if is_url(path) else path)


def exists(path: str) -> bool:
    return _fs(path).exists(path) if is_url(path) else os.path.exists(path)


def isfile(path: str) -> bool:
    return _fs(path).isfile(path) if is_url(path) else os.path.isfile(path)


def isdir(path: str) -> bool:
    """A local folder, or a URL prefix holding at least one object."""
    return _fs(path).isdir(path) if is_url(path) else os.path.isdir(path)


def makedirs(path: str) -> None:
    """`os.makedirs(exist_ok=True)` locally; nothing for a URL (prefixes need no creating)."""
    if not is_url(path):
        os.makedirs(path, exist_ok=True)


def open_file(path: str, mode: str = "r") -> IO[Any]:
    """`open` locally; fsspec's file object for a URL (written when closed)."""
    if not is_url(path):
        return open(path, mode)
    return _fs(path).open(path, mode)


def read_text(path: str) -> str:
    with open_file(path) as f:
        return f.read()


def write_atomic(path: str, data: str | bytes) -> None:
    """Writes a small file whole: temp file + rename locally, one upload for a URL."""
    raw = data.encode() if isinstance(data, str) else data
    if is_url(path):
        _fs(path).pipe_file(path, raw)
        return
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(raw)


def append_text(path: str, text: str) -> None:
    """Appends `text`; a URL object is read and rewritten whole (object stores cannot append)."""
    if not is_url(path):
        with open(path, "a") as f:
            f.write(text)
        return
    fs = _fs(path)
    old = fs.cat_file(path).decode() if fs.exists(path) else ""
    fs.pipe_file(path, (old + text).encode())


def glob(pattern: str) -> list[str]:
    """Sorted matches; URLs keep their scheme."""
    if not is_url(pattern):
        return sorted(_glob.glob(pattern))
    fs = _fs(pattern)
    return sorted(fs.unstrip_protocol(p) for p in fs.glob(pattern))


def listdir(path: str) -> list[str]:
    """Sorted names directly under a folder or URL prefix."""
    if not is_url(path):
        return sorted(os.listdir(path))
    return sorted(basename(p) for p in _fs(path).ls(path, detail=False))


def rmtree(path: str) -> None:
    """Removes a folder or everything under a URL prefix; nothing when absent."""
    if is_url(path):
        fs = _fs(path)
        if fs.exists(path):
            fs.rm(path, recursive=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def upload_file(local: str, path: str) -> None:
    """Copies a local file to `path`: one upload for a URL, atomic rename locally."""
    if is_url(path):
        _fs(path).put_file(local, path)
    else:
        with atomic_path(path) as tmp:
            shutil.copyfile(local, tmp)


def publish_folder(local: str, path: str, last: str | None = None) -> None:
    """Replaces the folder `path` with the local folder `local` (which is removed).

    Locally an atomic rename. For a URL: `last` (e.g. bundle.json, the file readers check) is
    deleted first and uploaded after every other file, so a reader never finds `last` beside a
    partial upload; stale objects of an older version are removed.
    """
    if not is_url(path):
        replace_folder(local, path)
        return
    fs = _fs(path)
    base = path.rstrip("/")
    files = sorted(
        os.path.relpath(os.path.join(d, n), local) for d, _, ns in os.walk(local) for n in ns
    )
    if last is not None and fs.exists(f"{base}/{last}"):
        fs.rm_file(f"{base}/{last}")
    stale = set()
    if fs.exists(base):
        stale = {os.path.relpath(fs.unstrip_protocol(p), base) for p in fs.find(base)}
    ordered = [f for f in files if f != last] + [f for f in files if f == last]
    for rel in ordered:
        fs.put_file(os.path.join(local, rel), f"{base}/{rel}")
    for rel in sorted(stale - set(files)):
        fs.rm_file(f"{base}/{rel}")
    shutil.rmtree(local)


def download_folder(path: str, local: str) -> None:
    """Copies every object under the URL prefix `path` into the (new or empty) folder `local`."""
    fs = _fs(path)
    base = path.rstrip("/")
    objects = [fs.unstrip_protocol(p) for p in fs.find(base)]
    if not objects:
        raise FileNotFoundError(f"{path} holds no files")
    for url in objects:
        dest = os.path.join(local, os.path.relpath(url, base))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        fs.get_file(url, dest)


def cache_root() -> str:
    """Where remote folders are copied: $EDITMGT_CACHE, else ~/.cache/editmgt_jax/remote."""
    return os.environ.get("EDITMGT_CACHE") or os.path.expanduser("~/.cache/editmgt_jax/remote")


def _listing(path: str) -> list[list]:
    fs = _fs(path)
    base = path.rstrip("/")
    info = fs.find(base, detail=True)
    return sorted(
        [os.path.relpath(fs.unstrip_protocol(p), base), i.get("size"), i.get("md5Hash")]
        for p, i in info.items()
    )


def local_copy(path: str) -> str:
    """A local folder with the contents of `path`: `path` itself when local, else a cached copy
    (refreshed when the remote listing's names, sizes or hashes changed)."""
    if not is_url(path):
        return path
    listing = _listing(path)
    if not listing:
        raise FileNotFoundError(f"{path} does not exist (no objects under it)")
    key = hashlib.sha256(abspath(path).encode()).hexdigest()[:16]
    folder = os.path.join(cache_root(), f"{basename(path)}-{key}")
    stamp = os.path.join(folder, ".remote-listing.json")
    if os.path.isfile(stamp):
        with open(stamp) as f:
            if json.load(f) == listing:
                return folder
    os.makedirs(cache_root(), exist_ok=True)
    tmp = make_temp_dir(cache_root(), prefix=f".{basename(path)}.")
    try:
        download_folder(path, tmp)
        with open(os.path.join(tmp, ".remote-listing.json"), "w") as f:
            json.dump(listing, f)
        replace_folder(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


@contextmanager
def local_file_for(path: str) -> Iterator[str]:
    """A local path to write; on success it lands at `path` (atomic rename, or one upload)."""
    if not is_url(path):
        with atomic_path(path) as tmp:
            yield tmp
        return
    with tempfile.TemporaryDirectory(prefix="editmgt-upload-") as folder:
        tmp = os.path.join(folder, basename(path))
        yield tmp
        upload_file(tmp, path)
