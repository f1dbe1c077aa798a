"""Users' item histories as T1 tokens: live histories for serving, and a refreshed T1 table.

pyarrow/numpy only. Token ``t`` is item ``catalogue[t - 1]`` (the T1 item vocabulary, see ``types.py``);
an id the catalogue does not hold is dropped and counted, never guessed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from .ids import as_strings
from .prepared import left_pad


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
    values = histories.values
    if not pa.types.is_string(values.type):
        values = as_strings(values) if not pa.types.is_null(values.type) else values.cast(pa.string())
    offsets = histories.offsets if histories.null_count == 0 else pc.fill_null(histories, []).offsets
    return pa.LargeListArray.from_arrays(pa.array(np.asarray(offsets, dtype=np.int64)), values)


def encode_histories(histories: list | pa.Array, catalogue: pa.Array, length: int) -> Histories:
    """T1 tokens of each history's last ``length`` known items; ids outside ``catalogue`` dropped and counted.

    One hash lookup over all ids of all rows (``pyarrow.compute.index_in``): no loop over rows.
    """
    lists = as_list_array(histories)
    offsets = np.asarray(lists.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    flat = lists.values.slice(offsets[0], offsets[-1] - offsets[0])
    offsets = offsets - offsets[0]
    found = pc.index_in(flat, value_set=catalogue)
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
