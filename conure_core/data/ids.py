"""Id columns: type checks, canonical string form, sorted vocabularies and vectorised encoding."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import DataError

INT64_MAX = 2**63 - 1


def check_id_column(arr: pa.ChunkedArray | pa.Array, *, file: str, column: str,
                    allow_negative: bool = True) -> pa.ChunkedArray | pa.Array:
    """Return the column as a signed integer or string array; other types, overflow or (optionally)
    negatives raise DataError."""
    typ = arr.type
    if pa.types.is_dictionary(typ):
        arr = arr.cast(typ.value_type)
        typ = arr.type
    if pa.types.is_large_string(typ) or pa.types.is_string_view(typ):
        return arr.cast(pa.string())
    if pa.types.is_string(typ):
        return arr
    if pa.types.is_unsigned_integer(typ) and typ.bit_width == 64:
        big = pc.greater(arr, pa.scalar(INT64_MAX, pa.uint64()))
        if pc.any(big).as_py():
            ex = pc.filter(arr, big).slice(0, 3).to_pylist()
            raise DataError(f"{file}: column '{column}' has ids that overflow 64-bit integers "
                            f"(e.g. {ex}); use ids below 2**63 or write them as strings.",
                            file=file, column=column, expectation="ids_fit_int64", examples=ex)
    if pa.types.is_floating(typ):
        # CSV readers turn integers too large for int64 into floats: say so instead of "float".
        big = pc.greater(pc.abs(arr), float(INT64_MAX))
        if pc.any(big).as_py():
            ex = [int(v) for v in pc.filter(arr, big).slice(0, 3).to_pylist()]
            raise DataError(f"{file}: column '{column}' has ids that overflow 64-bit integers "
                            f"(e.g. {ex}); use ids below 2**63 or write them as strings.",
                            file=file, column=column, expectation="ids_fit_int64", examples=ex)
    if not pa.types.is_integer(typ):
        ex = arr.drop_null().slice(0, 3).to_pylist() if hasattr(arr, "drop_null") else []
        raise DataError(f"{file}: column '{column}' has type {typ} (e.g. {ex}) but ids must be integers "
                        f"or strings; write the column as whole numbers or text.",
                        file=file, column=column, expectation="id_type", examples=ex)
    if pa.types.is_unsigned_integer(typ) and typ.bit_width == 64:
        arr = arr.cast(pa.int64())  # other integer widths stay as they are: no copy of 10^8 item ids
    if not allow_negative:
        neg = pc.less(arr, 0)
        if pc.any(neg).as_py():
            ex = pc.filter(arr, neg).slice(0, 3).to_pylist()
            raise DataError(f"{file}: column '{column}' has negative ids (e.g. {ex}); ids must be >= 0: "
                            f"fix the export or write the ids as strings.",
                            file=file, column=column, expectation="ids_non_negative", examples=ex)
    return arr


def as_strings(arr: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Canonical string form of an id column (ints in decimal), as one contiguous array."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr if pa.types.is_string(arr.type) else pc.cast(arr, pa.string())


def encode(arr: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Map values to 0..K-1 by their natural sorted order (ints numerically, strings bytewise).

    Returns (codes int32 numpy, vocabulary as strings in code order). One hashing pass
    (dictionary_encode) plus a sort of the K distinct values, so it scales to 10^8 values.
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_integer(arr.type) and arr.null_count == 0 and len(arr):
        dense = _encode_dense_ints(arr)
        if dense is not None:
            return dense
    enc = pc.dictionary_encode(arr)
    order = pc.sort_indices(enc.dictionary).to_numpy()
    rank = np.empty(len(order), dtype=np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    codes = rank[enc.indices.to_numpy(zero_copy_only=False)]
    vocab = as_strings(enc.dictionary.take(pa.array(order)))
    return codes, vocab


def _encode_dense_ints(arr: pa.Array) -> tuple[np.ndarray, pa.Array] | None:
    """encode() for integers in a compact range: a presence table and a cumulative sum instead of
    hashing (several times faster on 10^8 item ids). None when the range is too sparse."""
    lo, hi = (v.as_py() for v in pc.min_max(arr).values())
    span = hi - lo + 1
    if span > 4 * len(arr) + (1 << 20):
        return None
    vals = arr.to_numpy()
    shifted = vals if lo == 0 else vals - np.asarray(lo, dtype=vals.dtype)
    present = np.zeros(span, dtype=bool)
    present[shifted] = True
    rank = np.cumsum(present, dtype=np.int32) - 1
    codes = rank[shifted]
    vocab = np.flatnonzero(present).astype(np.int64) + lo
    return codes, as_strings(pa.array(vocab))
