"""Reading one task table (CSV or Parquet) into Arrow, with one-sentence errors for bad files."""
from __future__ import annotations

import csv
import gzip
import stat
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from .errors import DataError

TABLE_SUFFIXES = (".parquet", ".csv", ".csv.gz")


def checked_file(task_dir: Path, path: Path) -> Path:
    """``path`` if it is a regular file directly inside ``task_dir``; else DataError, without opening it.

    Only the directory entry is inspected (lstat), so a symbolic link is refused before anything it
    points to is read or shown: a task folder is the unit of input, nothing outside it is read.
    """
    task_dir, path = Path(task_dir), Path(path)
    if path.is_symlink():
        raise DataError(f"{path}: is a symbolic link; a task folder must hold its files themselves: "
                        f"copy the file into the folder instead of linking it.", file=str(path))
    inside = path.resolve().parent == task_dir.resolve()
    if not inside:
        raise DataError(f"{path}: resolves outside its task folder {task_dir}; put the file itself in the folder.",
                        file=str(path))
    if path.exists() and not stat.S_ISREG(path.lstat().st_mode):
        raise DataError(f"{path}: is not a regular file; put the table itself (a file) in the task folder.",
                        file=str(path))
    return path


def find_table(task_dir: Path) -> Path:
    """The one table file of a task folder (a regular file inside it; not opened here).

    Two tables (say data.csv and data.parquet) are refused rather than one of them picked silently.
    """
    task_dir = Path(task_dir)
    found = sorted(p for p in task_dir.iterdir() if p.name.endswith(TABLE_SUFFIXES) and not p.name.startswith(".")
                   and (p.is_symlink() or not p.is_dir()))
    if len(found) != 1:
        what = "no table" if not found else f"{len(found)} tables ({', '.join(p.name for p in found)})"
        fix = "remove all but one of them" if found else "add one"
        raise DataError(f"{task_dir}: found {what}; a task folder holds exactly one table "
                        f"(data.parquet or data.csv) next to task.yaml: {fix}.", file=str(task_dir))
    return checked_file(task_dir, found[0])


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read a CSV or Parquet file; unreadable, empty, ragged or non-UTF-8 input raises DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the task folder.", file=str(path))
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty; export the table again with a header and rows.", file=str(path))
    table = _read_parquet(path, columns) if path.name.endswith(".parquet") else _read_csv(path)
    if table.num_rows == 0:
        raise DataError(f"{path}: the table has no rows; export it again with its rows.", file=str(path))
    for name, typ in zip(table.column_names, table.schema.types):
        if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
            raise DataError(f"{path}: column '{name}' holds bytes that are not valid UTF-8; "
                            f"re-encode the file as UTF-8.", file=str(path), column=name)
    return table


def _read_parquet(path: Path, columns: list[str] | None) -> pa.Table:
    try:
        schema = pq.read_schema(path)
        cols = [c for c in columns if c in schema.names] if columns else None
        return pq.read_table(path, columns=cols)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({_short(exc)}); the file is probably "
                        f"truncated or corrupt: write it again.", file=str(path)) from None


def _read_csv(path: Path) -> pa.Table:
    # No Python callback (invalid_row_handler) goes into Arrow's threaded reader: the reader is
    # released on an Arrow thread, sometimes after the interpreter began to exit, and releasing a
    # Python object there aborts the process ("terminate called without an active exception",
    # exit 134). A ragged row is found by ``_first_ragged_row`` on the error path instead.
    try:
        return pcsv.read_csv(path, read_options=pcsv.ReadOptions(block_size=1 << 26))
    except pa.ArrowInvalid as exc:
        if "Empty CSV" in str(exc):
            raise DataError(f"{path}: the file is empty; export the table again with a header and rows.",
                            file=str(path)) from None
        ragged = _first_ragged_row(path)
        if ragged:
            line, fields, expected, text = ragged
            raise DataError(f"{path}: line {line} has {fields} fields where the header has {expected} "
                            f"({text[:60]!r}); fix or remove that row.", file=str(path), examples=[text[:60]]) from None
        raise DataError(f"{path}: not a readable CSV file ({_short(exc)}); export it again as "
                        f"comma-separated UTF-8 with a header row.", file=str(path)) from None


def _first_ragged_row(path: Path) -> tuple[int, int, int, str] | None:
    """(line, fields, header fields, text) of the first row whose field count differs from the
    header's (error path only, so a plain scan is fine); None when every row fits."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as fh:
        rows = csv.reader(fh)
        header = next(rows, None)
        for row in rows:
            if header is not None and row and len(row) != len(header):
                return rows.line_num, len(row), len(header), ",".join(row)
    return None


def _short(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:160]
