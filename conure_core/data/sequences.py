"""Building per-user item sequences (Arrow list arrays) from long or list tables, vectorised."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def from_long(users: pa.ChunkedArray, items: pa.ChunkedArray, timestamps: pa.ChunkedArray | None
              ) -> tuple[pa.Array, pa.ListArray]:
    """Group a long (user, item, timestamp) table into one list per user, oldest first.

    Ties on the timestamp keep the file's row order (stable sort): MovieLens has many.
    Returns (distinct users in first-appearance order, list array of their items).
    """
    enc = pc.dictionary_encode(_combine(users), null_encoding="encode")  # a null user is kept for the contract check
    ucode = enc.indices.to_numpy(zero_copy_only=False)
    if timestamps is not None:
        ts = _sortable(timestamps)
        order = np.lexsort((ts, ucode))  # stable: equal (user, time) keep file order
    else:
        order = np.argsort(ucode, kind="stable")
    flat = _combine(items).take(pa.array(order))
    counts = np.bincount(ucode, minlength=len(enc.dictionary))
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return enc.dictionary, pa.LargeListArray.from_arrays(pa.array(offsets), flat)


def from_lists(users: pa.ChunkedArray, lists: pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """A list-format table (user, items oldest first) as contiguous arrays."""
    return _combine(users), _combine(lists)


def cut_by_max_len(lists: pa.Array, max_len: int) -> dict[str, int]:
    """What keeping the last ``max_len`` items of every list drops: {"interactions": all items,
    "interactions_dropped": items cut, "users_cut": lists that lose items, "users": lists}."""
    lengths = np.diff(np.asarray(lists.offsets.to_numpy(zero_copy_only=False), dtype=np.int64))
    over = lengths - max_len
    return {"interactions": int(lengths.sum()), "interactions_dropped": int(over[over > 0].sum()),
            "users_cut": int((over > 0).sum()), "users": int(len(lengths))}


def keep_last(lists: pa.Array, max_len: int) -> tuple[pa.Array, np.ndarray]:
    """The most recent ``max_len`` items of every list: (flat values, offsets int64), no Python loop.

    Without anything to cut the values are a zero-copy slice."""
    offsets = np.asarray(lists.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    values = lists.values
    base = offsets[0]
    starts, ends = offsets[:-1] - base, offsets[1:] - base
    values = values.slice(base, offsets[-1] - base)
    new_starts = np.maximum(starts, ends - max_len)
    lengths = ends - new_starts
    new_offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    if np.array_equal(new_starts, starts):
        return values, new_offsets
    idx = np.arange(new_offsets[-1], dtype=np.int64) + np.repeat(new_starts - new_offsets[:-1], lengths)
    return values.take(pa.array(idx)), new_offsets


def _combine(arr):
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _sortable(ts: pa.ChunkedArray) -> np.ndarray:
    ts = _combine(ts)
    if pa.types.is_timestamp(ts.type) or pa.types.is_date(ts.type):
        ts = ts.cast(pa.int64())
    return ts.to_numpy(zero_copy_only=False)
