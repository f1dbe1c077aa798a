"""The landing contract: when a task folder dropped into a landing folder is complete.

The producer copies ``task.yaml`` and the table first and writes the marker ``_SUCCESS`` LAST
(any content, usually empty). A folder is ready when the marker is there and no other file in it
changed after the marker did; until then nothing of it is read. Everything here is ``stat`` calls
only, so a sweep over many folders costs no reading or hashing.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

MARKER = "_SUCCESS"
MANIFEST = "task.yaml"

Signature = list  # [[relative path, size, mtime_ns], ...] sorted: changes whenever a file does


def task_folders(landing: Path) -> list[Path]:
    """Sub-folders of ``landing`` holding a task.yaml (visible ones, sorted by name)."""
    landing = Path(landing)
    if not landing.is_dir():
        return []
    return sorted(p for p in landing.iterdir() if not p.name.startswith(".") and p.is_dir()
                  and os.path.lexists(p / MANIFEST))


def signature(folder: Path) -> Signature:
    """(path, size, mtime_ns) of every visible entry of a folder, links not followed."""
    folder = Path(folder)
    out = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names + dirs:
            if name.startswith("."):
                continue
            path = Path(root) / name
            st = path.lstat()
            if stat.S_ISDIR(st.st_mode):
                continue
            out.append([str(path.relative_to(folder)), st.st_size, st.st_mtime_ns])
    return sorted(out)


def readiness(folder: Path, sig: Signature | None = None) -> str | None:
    """None when the folder is complete, else why it is still waiting (one short phrase)."""
    sig = signature(folder) if sig is None else sig
    marker = next((e for e in sig if e[0] == MARKER), None)
    if marker is None or not stat.S_ISREG(os.lstat(Path(folder) / MARKER).st_mode):
        return f"no {MARKER} marker yet (write it last, once the table is complete)"
    later = [e[0] for e in sig if e[0] != MARKER and e[2] > marker[2]]
    if later:
        return f"{', '.join(later)} changed after {MARKER} (write the marker again once the copy is complete)"
    return None
