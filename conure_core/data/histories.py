"""Users' item histories as T1 tokens: live histories for serving, and a refreshed T1 table.

pyarrow/numpy only. Token ``t`` is item ``catalogue[t - 1]`` (the T1 item vocabulary, see ``types.py``);
an id the catalogue does not hold is dropped and counted, never guessed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from .ids import as_strings
from .prepare import DATA, VOCAB, PreparedTable
from .prepared import left_pad, read_meta
from .sequences import keep_last
from .splits import assign_splits, split_counts


@dataclass
class Histories:
    """Encoded histories: ``tokens`` [N, L] left-padded (0), each row's ``known`` and ``unknown`` id counts."""

    tokens: torch.Tensor
    known: np.ndarray
    unknown: np.ndarray


def as_list_array(histories: list | pa.Array) -> pa.ListArray:
    """Lists of item ids (ints or strings, oldest first) as one Arrow list array of strings."""
    if not isinstance(histories, (pa.Array, pa.ChunkedArray)):
        try:
            histories = pa.array(histories)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # ints and strings mixed in one list
            histories = pa.array([[str(x) for x in h] if h is not None else None for h in histories])
    if isinstance(histories, pa.ChunkedArray):
        histories = histories.combine_chunks()
    if pa.types.is_null(histories.type):
        histories = histories.cast(pa.list_(pa.string()))
    if not (pa.types.is_list(histories.type) or pa.types.is_large_list(histories.type)):
        raise ValueError(f"histories must be lists of item ids, not {histories.type}.")
    offsets = np.asarray(histories.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    values = histories.values.slice(offsets[0], offsets[-1] - offsets[0])  # a null row spans no values
    if not pa.types.is_string(values.type):
        values = as_strings(values) if not pa.types.is_null(values.type) else values.cast(pa.string())
    return pa.LargeListArray.from_arrays(pa.array(offsets - offsets[0]), values)


def encode_histories(histories: list | pa.Array, catalogue: pa.Array, length: int) -> Histories:
    """T1 tokens of each history's last ``length`` known items; ids outside ``catalogue`` dropped and counted.

    One hash lookup over all ids of all rows (``pyarrow.compute.index_in``): no loop over rows.
    """
    lists = as_list_array(histories)
    offsets = lists.offsets.to_numpy()
    found = pc.index_in(lists.values, value_set=catalogue)
    known_flat = found.is_valid().to_numpy(zero_copy_only=False)
    row_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    known = np.bincount(row_of[known_flat], minlength=len(offsets) - 1)
    unknown = np.diff(offsets) - known
    tokens = found.drop_null().to_numpy().astype(np.int64) + 1
    kept = np.zeros(len(known) + 1, dtype=np.int64)
    np.cumsum(known, out=kept[1:])
    return Histories(left_pad(tokens, kept, length), known, unknown)


def label_positions(catalogue: pa.Array, labels: list[str]) -> torch.Tensor:
    """For every T1 token 0..V+1: its position in a task's label vocabulary, -1 when it has none."""
    found = pc.fill_null(pc.index_in(catalogue, value_set=pa.array(labels, pa.string())), -1).to_numpy()
    out = torch.full((len(catalogue) + 2,), -1, dtype=torch.long)
    out[1:len(catalogue) + 1] = torch.from_numpy(found.astype(np.int64))
    return out


def refresh_table(base_dir: Path, users: pa.Array, lists: pa.Array) -> tuple[PreparedTable, dict]:
    """The stored histories of a prepared T1 folder with ``users``' rows replaced by ``lists`` (their current
    histories, oldest first) and new users added, in the same token vocabulary.

    Ids unknown to T1 are dropped and counted; a user left with no known item keeps their old row (a new
    one is skipped), counted too. Kept and replaced rows keep their split; new users get the seeded one.
    Returns the table to write (``prepare.write_prepared``) and its counts.
    """
    base_dir = Path(base_dir)
    meta = read_meta(base_dir)
    catalogue = pq.read_table(base_dir / VOCAB)["id"].combine_chunks()
    length = int(meta["max_len"])
    old = pq.read_table(base_dir / DATA)
    lists = as_list_array(lists)
    enc = pc.index_in(lists.values, value_set=catalogue)
    known = enc.is_valid()
    rows = np.repeat(np.arange(len(lists)), np.diff(lists.offsets.to_numpy()))
    per_row = np.bincount(rows[known.to_numpy(zero_copy_only=False)], minlength=len(lists))
    tokens = pa.LargeListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(per_row)]).astype(np.int64)),
        pc.add(enc.drop_null(), 1).cast(pa.int32()))
    values, offsets = keep_last(tokens, length)
    fresh = pa.table({"user_id": as_strings(users),
                      "tokens": pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)})
    fresh = fresh.filter(pa.array(per_row > 0))
    at = pc.index_in(fresh["user_id"], value_set=old["user_id"])
    is_new = at.is_null().to_numpy(zero_copy_only=False)
    seeded = assign_splits(fresh["user_id"].combine_chunks(), int(meta.get("seed", 0)))
    split = pc.fill_null(old["split"].take(at), 0).to_numpy().astype(np.int8)
    split[is_new] = seeded[is_new]
    kept = old.filter(pc.invert(pc.is_in(old["user_id"], value_set=fresh["user_id"]))).select(["user_id", "tokens", "split"])
    merged = pa.concat_tables([kept, fresh.append_column("split", pa.array(split)).cast(kept.schema)])
    merged = merged.take(pc.sort_indices(merged["user_id"]))
    counts = {"updated": int((~is_new).sum()), "added": int(is_new.sum()),
              "unknown_items": len(enc) - int(pc.sum(known.cast(pa.int64())).as_py() or 0),
              "skipped_users": int((per_row == 0).sum()), "users": merged.num_rows}
    refreshed = {k: meta[k] for k in ("kind", "num_items", "max_len", "seed", "manifest") if k in meta}
    # the digest is of the content alone: an update that changes nothing gives the same histories back
    refreshed.update(rows=merged.num_rows, splits=split_counts(merged["split"].to_numpy()), quarantined=0,
                     duplicates_dropped=0, refreshed=True)
    return PreparedTable(meta["name"], "sequence", merged, catalogue, refreshed), counts
