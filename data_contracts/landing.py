"""The landing contract: when a task folder dropped into a landing folder is complete, and intact.

The producer copies ``task.yaml`` and the table first and writes the marker ``_SUCCESS`` LAST. The
marker seals the folder: it lists every other file with its size and SHA-256 (``seal``; ``conure
land SRC`` copies a folder into landing and seals it), as JSON::

    {"format": "conure-landing/1", "files": {"data.csv": {"size": 1234, "sha256": "..."}, ...}}

A folder is ready when its marker lists exactly the files it holds with their sizes (``readiness``:
``stat`` calls and the small marker, no table read); it may be learned only when every file's
content matches its SHA-256 too (``mismatch``: one read of each file). A table cut short, a file
rewritten after the seal or one added later never passes for complete.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

MARKER = "_SUCCESS"
MANIFEST = "task.yaml"
FORMAT = "conure-landing/1"

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


def sha256_hex(path: Path) -> str:
    from conure_core.atomic import sha256_file

    return sha256_file(path).hexdigest()


def seal(folder: Path, hashes: dict[str, str] | None = None) -> dict:
    """Write the marker of ``folder`` (atomically, last): every other visible file with its size and
    SHA-256 (``hashes``: ones already computed while copying). Returns the marker."""
    from conure_core.atomic import atomic_write_bytes

    folder = Path(folder)
    hashes = hashes or {}
    files = {rel: {"size": size, "sha256": hashes.get(rel) or sha256_hex(folder / rel)}
             for rel, size, _ in signature(folder) if rel != MARKER}
    marker = {"format": FORMAT, "files": files}
    atomic_write_bytes(folder / MARKER, (json.dumps(marker, indent=1, sort_keys=True) + "\n").encode())
    return marker


def read_marker(folder: Path) -> dict | None:
    """The marker's file list ({path: {"size", "sha256"}}); None when it is no sealed marker."""
    path = Path(folder) / MARKER
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode) or os.lstat(path).st_size > 1 << 20:
            return None
        marker = json.loads(path.read_text())
        files = marker["files"]
        ok = marker.get("format") == FORMAT and isinstance(files, dict) and all(
            isinstance(f, dict) and isinstance(f.get("size"), int) and isinstance(f.get("sha256"), str)
            for f in files.values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return files if ok else None


def readiness(folder: Path, sig: Signature | None = None) -> str | None:
    """None when the folder is complete (sealed, same files, same sizes), else why it is still
    waiting (one short phrase). Stat calls and the marker only: no table is read."""
    sig = signature(folder) if sig is None else sig
    if not any(e[0] == MARKER for e in sig) or not stat.S_ISREG(os.lstat(Path(folder) / MARKER).st_mode):
        return f"no {MARKER} marker yet (`conure land SRC` copies a folder here and writes it last)"
    files = read_marker(folder)
    if files is None:
        return (f"{MARKER} lists no files with their sizes and SHA-256 (seal the folder once it is complete: "
                f"`conure land --in-place {folder}`)")
    present = {e[0]: e[1] for e in sig if e[0] != MARKER}
    missing = sorted(set(files) - set(present))
    extra = sorted(set(present) - set(files))
    sizes = [f"{rel} is {present[rel]:,} bytes, {MARKER} says {files[rel]['size']:,}"
             for rel in sorted(set(files) & set(present)) if present[rel] != files[rel]["size"]]
    if missing or extra or sizes:
        parts = ([f"{', '.join(missing)} listed in {MARKER} but not here"] if missing else []) + \
                ([f"{', '.join(extra)} not in {MARKER}"] if extra else []) + sizes
        return f"{'; '.join(parts)} (a copy still going on, or a change after the seal: seal it again once complete)"
    return None


def mismatch(folder: Path) -> str | None:
    """None when every file's SHA-256 equals its marker's (reads each file once), else one sentence."""
    folder = Path(folder)
    files = read_marker(folder) or {}
    bad = [rel for rel, f in sorted(files.items()) if sha256_hex(folder / rel) != f["sha256"]]
    if not bad:
        return None
    return (f"{folder}: {', '.join(bad)} do{'es' * (len(bad) == 1)} not match the SHA-256 in its {MARKER} "
            f"(changed after the folder was sealed); replace the folder with a complete copy "
            f"(`conure land SRC`) or seal it again if its content is right.")


def land(src: Path, landing: Path, name: str | None = None, replace: bool = False, in_place: bool = False) -> Path:
    """Copy the task folder ``src`` into ``landing/<name>`` (default: its own name), sealed.

    The files are copied into a hidden staging folder inside ``landing`` and hashed as they are
    copied; the marker is written last and the folder renamed into place whole, so a sweep never
    sees half of it. ``replace``: swap an existing folder of that name (e.g. one that was learned
    wrongly, after ``conure rollback``). ``in_place``: seal ``src`` where it is (already copied).
    Raises ValueError (bad input) or FileExistsError with one sentence.
    """
    from conure_core.atomic import publish_dir, staged_dir

    src, landing = Path(src), Path(landing)
    if not (src / MANIFEST).is_file():
        raise ValueError(f"{src} is not a task folder (no {MANIFEST}); pass a folder holding task.yaml and a table.")
    if in_place:
        seal(src)
        return src
    final = landing / (name or src.resolve().name)
    if final.exists() and not replace:
        raise FileExistsError(f"{final} already exists; pass --replace to swap it for {src}, or --name NEW.")
    before = signature(src)
    with staged_dir(landing) as tmp:
        hashes = {}
        for rel, _, _ in before:
            if rel == MARKER:
                continue
            if not stat.S_ISREG(os.lstat(src / rel).st_mode):
                raise ValueError(f"{src / rel} is not a regular file (a link?); copy the real file into the folder.")
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            h = hashlib.sha256()
            with open(src / rel, "rb") as fin, open(tmp / rel, "wb") as fout:
                for block in iter(lambda: fin.read(1 << 24), b""):
                    h.update(block)
                    fout.write(block)
                fout.flush()
                os.fsync(fout.fileno())
            hashes[rel] = h.hexdigest()
        if signature(src) != before:
            raise ValueError(f"{src} changed while it was copied; land it again once it is complete.")
        seal(tmp, hashes)
        tmp.chmod(0o755)  # mkdtemp made it private
        return publish_dir(tmp, final, replace=True)
