"""Preparing a task table: vocabularies, the join to T1, stable splits, content-addressed Parquet.

pyarrow/numpy only (no validation library): ``data_contracts.ingest`` validates first, then calls
these. Layout written under ``out_root/<name>/<digest>/``:

- ``data.parquet``: sequence task: user_id (str), tokens (list<int32>, T1 item tokens 1..V, oldest
  first, at most max_len), split (int8); a task after T1: user_id, t1_row (int32 row of the user in
  T1's data.parquet), label (int32 0..K-1, or float64 for a kind whose labels are numbers), split.
- ``vocab.parquet``: column ``id`` (str): item vocabulary (token t = row t-1) or label vocabulary
  (``["value"]``: the one output of a task whose labels are numbers).
- ``quarantine.parquet`` (only if any): rows whose user is unknown to T1, with the reason.
- ``meta.json``: name, kind, num_items, max_len, rows, splits, quarantined, t1 reference, digest.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from conure_core.atomic import publish_dir, sha256_file, staged_dir
from conure_core.kinds import kind_of

from .errors import DataError
from .ids import as_strings, check_id_column, encode
from .sequences import cut_by_max_len, from_long, from_lists, keep_last
from .splits import assign_splits, split_counts

FORMAT_VERSION = 1
DEFAULT_MAX_LEN = 100
DATA, VOCAB, QUARANTINE, META = "data.parquet", "vocab.parquet", "quarantine.parquet", "meta.json"
DEFAULT_COLUMNS = {"user_id": "user_id", "item_id": "item_id", "timestamp": "timestamp",
                   "items": "items", "label": "label"}


@dataclass
class PreparedTable:
    """A prepared task in memory, before it is written."""

    name: str
    kind: str
    data: pa.Table
    vocab: pa.Array
    meta: dict
    quarantine: pa.Table | None = None
    extra: dict = field(default_factory=dict)


def resolve_columns(columns: dict | None) -> dict:
    """Role -> column name, defaults overridden by the manifest's ``columns``."""
    out = dict(DEFAULT_COLUMNS)
    out.update({k: v for k, v in (columns or {}).items() if v})
    return out


def sequence_layout(table: pa.Table, columns: dict, file: str) -> str:
    """'long' or 'list', from the columns present; a table with neither raises DataError."""
    layout = "list" if columns["items"] in table.column_names else "long"
    roles = ("user_id",) if layout == "list" else ("user_id", "item_id")
    missing = [columns[r] for r in roles if columns[r] not in table.column_names]
    if missing:
        raise DataError(f"{file}: missing column '{missing[0]}' (found {table.column_names}); a sequence "
                        f"table needs {columns['user_id']}, {columns['item_id']}[, {columns['timestamp']}] "
                        f"or {columns['user_id']}, {columns['items']}: rename the column or set "
                        f"'columns' in task.yaml.", file=file, column=missing[0], expectation="column_exists")
    return layout


def require_columns(table: pa.Table, names: list[str], file: str) -> None:
    """Raise DataError naming the first missing column."""
    for name in names:
        if name not in table.column_names:
            raise DataError(f"{file}: missing column '{name}' (found {table.column_names}); rename the "
                            f"column or set 'columns' in task.yaml.", file=file, column=name,
                            expectation="column_exists")


def sequence_source(table: pa.Table, columns: dict, file: str) -> tuple[pa.Array, pa.Array]:
    """(users, list of items oldest first) from a long or list sequence table; ids type-checked."""
    layout = sequence_layout(table, columns, file)
    users = check_id_column(table[columns["user_id"]], file=file, column=columns["user_id"])
    if layout == "list":
        lists = table[columns["items"]]
        if not (pa.types.is_list(lists.type) or pa.types.is_large_list(lists.type)):
            raise DataError(f"{file}: column '{columns['items']}' has type {lists.type} but must be a list "
                            f"of item ids (oldest first); write it as a Parquet list column or use the long "
                            f"format (user_id, item_id, timestamp).", file=file, column=columns["items"],
                            expectation="column_type")
        users, lists = from_lists(users, lists)
        values = check_id_column(lists.values, file=file, column=columns["items"])
        if values is not lists.values:  # only when the type changed (e.g. uint64 -> int64)
            lists = type(lists).from_arrays(lists.offsets, values, mask=lists.is_null() if lists.null_count else None)
        return users, lists
    items = check_id_column(table[columns["item_id"]], file=file, column=columns["item_id"])
    ts = table[columns["timestamp"]] if columns["timestamp"] in table.column_names else None
    if ts is not None and not (pa.types.is_integer(ts.type) or pa.types.is_timestamp(ts.type)
                               or pa.types.is_date(ts.type) or pa.types.is_floating(ts.type)):
        raise DataError(f"{file}: column '{columns['timestamp']}' has type {ts.type}; timestamps must be "
                        f"integers (epoch seconds) or datetimes.", file=file, column=columns["timestamp"],
                        expectation="column_type")
    if ts is not None and ts.null_count:
        rows = pc.indices_nonzero(pc.is_null(ts)).to_numpy()[:3]
        raise DataError(f"{file}: column '{columns['timestamp']}' has {ts.null_count} empty values (rows "
                        f"{', '.join(str(int(r) + 1) for r in rows)}); fill them or drop those rows.",
                        file=file, column=columns["timestamp"], expectation="not_null",
                        examples=[int(r) + 1 for r in rows])
    return from_long(users, items, ts)


def label_source(table: pa.Table, columns: dict, file: str, kind: str = "item") -> tuple[pa.Array, pa.Array]:
    """(users, labels) of a label table; ids type-checked, and labels as ids or, for a kind whose labels
    are numbers, as finite numbers (float64)."""
    require_columns(table, [columns["user_id"], columns["label"]], file)
    users = check_id_column(table[columns["user_id"]], file=file, column=columns["user_id"])
    if kind_of(kind).labels == "numbers":
        return users.combine_chunks(), number_column(table[columns["label"]], file, columns["label"], kind)
    labels = check_id_column(table[columns["label"]], file=file, column=columns["label"])
    return users.combine_chunks(), labels.combine_chunks()


def number_column(arr: pa.ChunkedArray, file: str, column: str, kind: str) -> pa.Array:
    """The column as finite float64 numbers; text, empty or non-finite values raise DataError."""
    if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
        ex = [str(v) for v in arr.drop_null().slice(0, 3).to_pylist()]
        raise DataError(f"{file}: column '{column}' holds {arr.type} values (e.g. {ex}) but a {kind} task's labels "
                        f"must be numbers; write them as numbers, or use kind 'class' for categories.",
                        file=file, column=column, expectation="column_type", examples=ex)
    values = pc.cast(arr, pa.float64()).combine_chunks()
    bad = pc.invert(pc.fill_null(pc.is_finite(values), False))
    if pc.any(bad).as_py():
        rows = pc.indices_nonzero(bad).to_numpy()[:3]
        raise DataError(f"{file}: column '{column}' has {pc.sum(bad).as_py()} empty or non-finite values (rows "
                        f"{', '.join(str(int(r) + 1) for r in rows)}); fill them with numbers or drop those rows.",
                        file=file, column=column, expectation="not_null",
                        examples=[int(r) + 1 for r in rows])
    return values


def prepare_sequences(users: pa.Array, lists: pa.Array, *, name: str, max_len: int = DEFAULT_MAX_LEN,
                      seed: int = 0) -> PreparedTable:
    """T1: keep each user's last ``max_len`` items, tokens 1..V by sorted item id, rows by user id."""
    order = pc.sort_indices(users)  # rows by natural user order: input row order doesn't matter
    users, lists = users.take(order), lists.take(order)  # Arrow list take: one copy, no index arrays
    cut = cut_by_max_len(lists, max_len)  # said in validate / learn output and MLflow, never silent
    values, offsets = keep_last(lists, max_len)
    codes, vocab = encode(values)
    codes += 1  # tokens 1..V (0 = padding)
    user_s = as_strings(users)
    split = assign_splits(user_s, seed)
    list_cls = pa.ListArray if offsets[-1] < 2**31 - 1 else pa.LargeListArray
    off_type = pa.int32() if list_cls is pa.ListArray else pa.int64()
    data = pa.table({"user_id": user_s,
                     "tokens": list_cls.from_arrays(pa.array(offsets, off_type), pa.array(codes)),
                     "split": pa.array(split)})
    meta = {"kind": "sequence", "num_items": len(vocab), "max_len": int(max_len),
            "rows": data.num_rows, "splits": split_counts(split), "quarantined": 0,
            "duplicates_dropped": 0, "seed": seed, "interactions": cut["interactions"],
            "interactions_dropped": cut["interactions_dropped"], "users_cut": cut["users_cut"]}
    return PreparedTable(name, "sequence", data, vocab, meta)


def lookup_users(users: pa.Array, t1_users: pa.Array) -> np.ndarray:
    """Row of each user in T1 (int64, -1 when unknown): one hash join in Arrow."""
    idx = pc.index_in(as_strings(users), value_set=t1_users)
    return pc.fill_null(idx, -1).to_numpy().astype(np.int64)


def prepare_labels(users: pa.Array, labels: pa.Array, t1_users: pa.Array, *, name: str, kind: str,
                   t1: dict, seed: int = 0, rows: np.ndarray | None = None) -> PreparedTable:
    """A task after T1: join to T1 by user, quarantine unknown users, label ids 0..K-1, dedupe.

    A kind whose labels are numbers keeps them as float64 (its vocabulary is ``["value"]``) and one
    row per user (the first; its contract refuses duplicates before this).

    ``t1`` is T1's reference (name, digest, path relative to this task's folder, num_items, max_len);
    ``rows`` may pass a ``lookup_users`` result already computed (validation needs it first).
    """
    rows = lookup_users(users, t1_users) if rows is None else rows
    known = rows >= 0
    quarantine = None
    if not known.all():
        bad = pa.array(~known)
        quarantine = pa.table({"user_id": as_strings(users.filter(bad)), "label": as_strings(labels.filter(bad)),
                               "reason": pa.repeat("user unknown to T1", int((~known).sum()))})
        keep = pa.array(known)
        users, labels, rows = users.filter(keep), labels.filter(keep), rows[known]
    if len(rows) == 0:
        raise DataError(f"task '{name}': none of its users is in T1 '{t1.get('name')}'; check that the "
                        f"user ids match T1's.", expectation="users_known_to_t1")
    if kind_of(kind).labels == "numbers":
        key, first = np.unique(rows, return_index=True)  # one row per user, sorted by t1 row
        t1_row, label, vocab = key.astype(np.int32), labels.take(pa.array(first)), pa.array(["value"])
        user_s = as_strings(users).take(pa.array(first))
        row_keys = user_s
    else:
        codes, vocab = encode(labels)
        k = np.int64(len(vocab))
        key, first = np.unique(rows * k + codes.astype(np.int64), return_index=True)  # sorted by (t1 row, label)
        t1_row, label = (key // k).astype(np.int32), pa.array((key % k).astype(np.int32))
        user_s = as_strings(users).take(pa.array(first))
        row_keys = pc.binary_join_element_wise(user_s, vocab.take(label), "\x1f")
    split = assign_splits(row_keys, seed)
    data = pa.table({"user_id": user_s, "t1_row": pa.array(t1_row), "label": label,
                     "split": pa.array(split)})
    meta = {"kind": kind, "num_items": int(t1["num_items"]), "max_len": int(t1["max_len"]),
            "num_labels": len(vocab), "rows": data.num_rows, "splits": split_counts(split),
            "quarantined": 0 if quarantine is None else quarantine.num_rows,
            "duplicates_dropped": int(len(rows) - len(key)), "seed": seed,
            "t1": {k_: t1[k_] for k_ in ("name", "digest", "path")}}
    return PreparedTable(name, kind, data, vocab, meta, quarantine)


def write_prepared(pt: PreparedTable, out_root: Path, *, extra_meta: dict | None = None) -> Path:
    """Write atomically to ``out_root/<name>/<digest>/`` and return that folder.

    Files go to a temp folder that is renamed once complete, so a crash leaves nothing partial;
    the same input gives byte-identical files and the same digest (an existing folder is reused).
    """
    root = Path(out_root) / pt.name
    created = not root.exists()
    try:
        with staged_dir(root) as tmp:
            digest = hashlib.sha256()
            files = [(DATA, pt.data), (VOCAB, pa.table({"id": pt.vocab}))]
            if pt.quarantine is not None:
                files.append((QUARANTINE, pt.quarantine))
            for fname, table in files:
                # No dictionary pages: ids are (nearly) unique, so they only cost time (2x on T1).
                pq.write_table(table, tmp / fname, compression="zstd", use_dictionary=False)
                digest.update(fname.encode() + b"\0" + sha256_file(tmp / fname).hexdigest().encode() + b"\0")
            meta = {"format": FORMAT_VERSION, "name": pt.name, **pt.meta, **(extra_meta or {})}
            digest.update(json.dumps(meta, sort_keys=True).encode())
            meta["digest"] = digest.hexdigest()[:16]
            (tmp / META).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
            return publish_dir(tmp, root / meta["digest"])
    except BaseException:
        if created and root.exists() and not any(root.iterdir()):
            root.rmdir()
        raise


def t1_reference(t1_dir: Path, task_root: Path) -> tuple[dict, pa.Array]:
    """(reference dict for prepare_labels, T1 users in row order) of a prepared T1 folder."""
    t1_dir = Path(t1_dir)
    if not (t1_dir / META).is_file() or not (t1_dir / DATA).is_file():
        raise DataError(f"{t1_dir}: not a prepared T1 folder (no {META} / {DATA}); ingest the sequence task "
                        f"first and pass the folder it returns.", file=str(t1_dir))
    meta = json.loads((t1_dir / META).read_text())
    if meta.get("kind") != "sequence":
        raise DataError(f"{t1_dir}: the T1 reference is a '{meta.get('kind')}' task; pass the prepared "
                        f"sequence task (T1).", file=str(t1_dir))
    users = pq.read_table(t1_dir / DATA, columns=["user_id"])["user_id"].combine_chunks()
    rel = os.path.relpath(t1_dir.resolve(), (Path(task_root) / "_").resolve())
    ref = {"name": meta["name"], "digest": meta["digest"], "path": rel,
           "num_items": meta["num_items"], "max_len": meta["max_len"]}
    return ref, users


def prepare_task_dir(task_dir: Path, out_root: Path, t1_dir: Path | None = None) -> Path:
    """Prepare a task folder WITHOUT validation (notebooks, conure_core on its own); returns the
    prepared folder. The pipeline uses ``data_contracts.ingest.ingest_task``, which validates first
    (and so gives one-sentence errors and quarantine reports for bad input)."""
    import yaml

    from .tables import checked_file, find_table, read_table

    task_dir = Path(task_dir)
    manifest = yaml.safe_load(checked_file(task_dir, task_dir / "task.yaml").read_text(encoding="utf-8")) or {}

    path = find_table(task_dir)
    table = read_table(path)
    columns = resolve_columns(manifest.get("columns"))
    seed = int(manifest.get("split_seed", 0))
    if manifest.get("kind") == "sequence":
        users, lists = sequence_source(table, columns, str(path))
        pt = prepare_sequences(users, lists, name=manifest["name"], seed=seed,
                               max_len=int(manifest.get("max_len") or DEFAULT_MAX_LEN))
    else:
        if t1_dir is None:
            raise DataError(f"{task_dir}: a {manifest.get('kind')} task needs its prepared T1; pass t1_dir.",
                            file=str(task_dir))
        ref, t1_users = t1_reference(t1_dir, Path(out_root) / manifest["name"])
        users, labels = label_source(table, columns, str(path), manifest["kind"])
        pt = prepare_labels(users, labels, t1_users, name=manifest["name"], kind=manifest["kind"], t1=ref, seed=seed)
    return write_prepared(pt, out_root)
