"""Atomic writes and file digests: readers see the old content or the new, never half of it.

Files: ``atomic_write_bytes`` (temp file beside the target, fsync, rename). Folders: write into
``staged_dir(parent)`` and ``publish_dir(tmp, final)`` it; a crash or an error leaves no partial
folder under its final name (only a ``.tmp-*`` folder that the next writer of that parent ignores).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

TMP_PREFIX = ".tmp-"


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside ``path`` durable (best effort: not every filesystem allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, before_rename=None) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it, then rename it over ``path``.

    ``before_rename()``: called once the temp file is complete (the pipeline's crash points hook in here).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def staged_dir(parent: str | os.PathLike) -> Iterator[Path]:
    """A fresh ``.tmp-*`` folder under ``parent``; removed on exit unless ``publish_dir`` moved it."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish_dir(tmp: Path, final: Path, replace: bool = False) -> Path:
    """Rename the complete folder ``tmp`` to ``final`` and return ``final``.

    Content-addressed folders (``replace=False``): an existing ``final`` holds the same content, so
    it is kept and ``tmp`` dropped, also when a concurrent writer wins the rename. ``replace=True``
    swaps an existing ``final`` for the new one.
    """
    if final.exists():
        if not replace:
            shutil.rmtree(tmp)
            return final
        shutil.rmtree(final)
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.exists():
            raise
        shutil.rmtree(tmp)
        return final
    fsync_dir(final.parent)
    return final


def sha256_file(path: str | os.PathLike, into=None):
    """Feed a file's bytes to ``into`` (a hashlib object; a new sha256 when None) and return it."""
    h = into if into is not None else hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            h.update(block)
    return h
