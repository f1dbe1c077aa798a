"""Files created once and then trusted: written beside their final path and renamed into place.

- ``atomic_write_bytes``: a file (HEAD.json, last_run.json) through a fsynced temp file + rename.
- ``bundled_dirs``: the bundled task folders, written whole into a temp folder, then renamed.
- ``hold_home``: every process that writes under a home holds a shared lock on ``<home>/.writers``
  for as long as it lives; one that finds itself alone (an exclusive lock succeeds) first removes
  the temporaries killed processes left behind (``states/.tmp-*``, ``prepared/**/.tmp-*``,
  ``.*.tmp`` files, ``bundled.tmp-*``): with no other writer alive, every temporary is stale.
"""
from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from typing import Callable

from conure_core import atomic
from conure_core.atomic import publish_dir
from tasks import crash

_held: dict[Path, int] = {}  # home -> fd of its writers lock, open for the life of the process

# temporaries under a home (relative globs, files or folders), all written by tmp + rename
STALE = ("states/.tmp-*", "prepared/*/.tmp-*", "prepared/*/reports/.tmp-*", "lineages/*/.*.tmp",
         "bundled.tmp-*", "bundled.old-*")


def atomic_write_bytes(path: Path, data: bytes, point: str = "") -> None:
    """``conure_core.atomic.atomic_write_bytes`` with crash points ``<point>`` (temp file complete, not
    renamed) and ``<point>-done``."""
    atomic.atomic_write_bytes(path, data, before_rename=(lambda: crash.point(point)) if point else None)
    if point:
        crash.point(f"{point}-done")


def bundled_dirs(dest: Path, names: list[str], write: Callable[[Path], list[Path]]) -> list[Path]:
    """The bundled task folders under ``dest``: written whole beside it, then renamed into place.

    ``write(folder)`` writes every task folder into ``folder``. A ``dest`` missing a task (left by
    an older version killed while writing it) is set aside and rewritten."""
    if all((dest / n / "task.yaml").is_file() and (dest / n / "data.parquet").is_file() for n in names):
        return [dest / n for n in names]
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    crash.point("bundled-write")
    if dest.exists():  # incomplete: move it aside first (a rename cannot replace a full folder)
        old = dest.with_name(f"{dest.name}.old-{os.getpid()}")
        os.rename(dest, old)
        shutil.rmtree(old, ignore_errors=True)
    publish_dir(tmp, dest)
    return [dest / n for n in names]


def hold_home(root: Path) -> None:
    """Register this process as a writer under ``root`` (once); sweep stale temporaries if alone."""
    root = Path(root).resolve()
    if root in _held:
        return
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / ".writers", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # another writer is alive: its temporaries may be live, leave them all
        pass
    else:
        sweep(root)
    fcntl.flock(fd, fcntl.LOCK_SH)  # converts ours (or waits out a sweeping peer)
    _held[root] = fd


def sweep(root: Path) -> list[Path]:
    """Remove the temporaries under ``root`` (call only while no other writer runs); returns them."""
    gone = []
    for pattern in STALE:
        for path in root.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            gone.append(path)
    return gone
