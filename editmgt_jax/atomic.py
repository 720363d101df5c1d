"""Atomic file writes: a reader never sees a half-written file, and a crash leaves the old one.

Temporary files and folders here are created with the mode the user's umask gives (0666 / 0777
masked, as `open` and `os.makedirs` would), not tempfile's private 0600 / 0700: they are renamed
into place and become the outputs, which others may need to read.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import threading
from collections.abc import Iterator, Mapping
from typing import Any

_ATTEMPTS = 100
_UMASK_LOCK = threading.Lock()


@functools.cache
def _umask_by_setting_it() -> int:
    # os.umask can only be read by setting it, process-wide: do it once, under a lock, and cache.
    with _UMASK_LOCK:
        umask = os.umask(0o077)
        os.umask(umask)
    return umask


def current_umask() -> int:
    """The process's umask, read without changing it where Linux reports it (/proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _umask_by_setting_it()


def save_safetensors(tensors: Mapping[str, Any], path: str) -> None:
    """`safetensors.numpy.save_file`, but the file gets the umask's mode, not 0600.

    safetensors writes a private temporary file and renames it onto `path`, so it is always 0600.
    """
    from safetensors.numpy import save_file

    save_file(dict(tensors), path)
    os.chmod(path, 0o666 & ~current_umask())


def _create_fresh(directory: str, prefix: str, suffix: str, create) -> str:
    for _ in range(_ATTEMPTS):
        path = os.path.join(directory, f"{prefix}{secrets.token_hex(6)}{suffix}")
        try:
            create(path)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name {prefix}*{suffix} in {directory}")


def make_temp_file(directory: str, prefix: str = ".tmp.", suffix: str = "") -> str:
    """Creates an empty file with a fresh name in `directory`; returns its path.

    Like `tempfile.mkstemp`, but the mode is 0666 less the umask: the kernel applies the umask
    (and any default ACL) itself, so the process-wide umask is never read or changed.
    """

    def create(path: str) -> None:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))

    return _create_fresh(directory, prefix, suffix, create)


def make_temp_dir(directory: str, prefix: str = ".tmp.") -> str:
    """Creates a folder with a fresh name in `directory`; returns its path.

    Like `tempfile.mkdtemp`, but the mode is 0777 less the umask (see `make_temp_file`).
    """
    return _create_fresh(directory, prefix, "", lambda path: os.mkdir(path, 0o777))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary path beside `path`; renames it onto `path` only if the block succeeds.

    Example:
        >>> import os, tempfile
        >>> target = os.path.join(tempfile.mkdtemp(), "out.txt")
        >>> with atomic_path(target) as tmp:
        ...     _ = open(tmp, "w").write("done")
        >>> open(target).read()
        'done'
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = make_temp_file(directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def replace_folder(tmp: str, path: str) -> None:
    """Moves the finished folder `tmp` onto `path` (replacing it, if it exists)."""
    if os.path.exists(path):
        old = path + ".old"
        if os.path.exists(old):
            shutil.rmtree(old)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old)
    else:
        os.replace(tmp, path)
