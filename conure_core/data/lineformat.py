"""The line format of the paper's public data (PeterRec/Conure TTL files).

T1: one user per line, ``id,id,...`` (oldest first). A later task: ``id,...,id,,target,target,...``,
the user's T1 sequence, an empty field, then one or more targets. The files carry no user ids:
a T1 line's user id is its 0-based line number, and a later line belongs to the T1 user whose
sequence is identical (so its item ids are mapped through T1's vocabulary when prepared); a line
whose sequence is not in T1 gets the id ``unmatched:<line>`` and is quarantined on ingest.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from .errors import DataError


def _lines(path: Path) -> pa.Array:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found.", file=str(path))
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line} is not valid UTF-8; re-encode the file as UTF-8.",
                        file=str(path)) from None
    lines = pc.utf8_rtrim(pa.array(text.splitlines()), characters=",\r ")
    if len(lines) == 0 or pc.all(pc.equal(lines, "")).as_py():
        raise DataError(f"{path}: the file is empty; expected one line per user.", file=str(path))
    return lines


def _ids(values: pa.Array) -> pa.Array:
    """Ids as int64 when every one is a decimal integer, else as strings."""
    if pc.all(pc.utf8_is_digit(values)).as_py():
        return pc.cast(values, pa.int64())
    return values


def read_t1_lines(path: Path) -> pa.Table:
    """T1 lines -> list-format table (user_id = line number, items oldest first, ``key`` = the line)."""
    lines = _lines(path)
    keep = pc.not_equal(lines, "")
    user = pa.array(np.arange(len(lines), dtype=np.int64)).filter(keep)
    lines = lines.filter(keep)
    items = pc.split_pattern(lines, ",")
    items = pa.ListArray.from_arrays(items.offsets, _ids(items.flatten()))
    return pa.table({"user_id": user, "items": items, "key": lines})


def read_task_lines(path: Path, t1: pa.Table) -> pa.Table:
    """A later task's lines -> (user_id, label) rows, users found by their T1 sequence."""
    lines = _lines(path)
    lines = lines.filter(pc.not_equal(lines, ""))
    parts = pc.split_pattern(lines, ",,", max_splits=1)
    n_parts = pc.list_value_length(parts).to_numpy()
    if (n_parts < 2).any():
        bad = int(np.flatnonzero(n_parts < 2)[0])
        raise DataError(f"{path}: line {bad + 1} has no ',,' between the sequence and its targets; expected "
                        f"'id,...,id,,target'.", file=str(path), examples=[lines[bad].as_py()[:60]])
    seq, targets = pc.list_element(parts, 0), pc.list_element(parts, 1)
    row = pc.index_in(seq, value_set=t1["key"])
    line_no = np.arange(len(lines))
    unmatched = pc.binary_join_element_wise("unmatched:", pc.cast(pa.array(line_no), pa.string()), "")
    matched = pc.cast(t1["user_id"].combine_chunks().take(pc.fill_null(row, 0)), pa.string())
    user = pc.if_else(pc.is_null(row), unmatched, matched)
    split = pc.split_pattern(targets, ",")
    labels = _ids(split.flatten())
    users = user.take(pc.list_parent_indices(split))
    if pa.types.is_integer(t1["user_id"].type) and not pc.any(pc.is_null(row)).as_py():
        users = pc.cast(users, pa.int64())
    return pa.table({"user_id": users, "label": labels})


def write_line_tasks(t1_file: Path, later: list[tuple[str, str, Path]], dest: Path, *,
                     t1_name: str = "T1", max_len: int = 100) -> list[Path]:
    """Task folders from line files: T1 plus ``later`` = [(name, kind 'item'|'class', path), ...]."""
    dest = Path(dest)
    t1 = read_t1_lines(t1_file)
    out = [_write(dest / t1_name, {"name": t1_name, "kind": "sequence", "max_len": max_len},
                  t1.select(["user_id", "items"]))]
    for name, kind, path in later:
        out.append(_write(dest / name, {"name": name, "kind": kind}, read_task_lines(path, t1)))
    return out


def _write(folder: Path, manifest: dict, table: pa.Table) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "task.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    pq.write_table(table, folder / "data.parquet", compression="zstd")
    return folder
