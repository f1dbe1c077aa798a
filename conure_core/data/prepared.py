"""Loading a prepared task folder (see prepare.py) into TaskData, vectorised."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from .errors import DataError
from .prepare import DATA, META, VOCAB
from .types import TaskData


def read_meta(prepared_dir: Path) -> dict:
    """The meta.json of a prepared folder (name, kind, digest, rows, splits, ...)."""
    path = Path(prepared_dir) / META
    if not path.is_file():
        raise DataError(f"{prepared_dir}: not a prepared task folder (no {META}); run ingest first.",
                        file=str(prepared_dir))
    return json.loads(path.read_text())


# Token matrices above this many entries are held as int32 (half of int64: 1.47M users x 100 is
# 0.59 GiB instead of 1.18 GiB); the learner widens each batch to int64 on its device. Smaller ones
# stay int64, as they always were.
INT32_ENTRIES = 1 << 26


def token_dtype(entries: int, num_tokens: int) -> np.dtype:
    """int32 for a large matrix whose token ids fit, else int64."""
    return np.dtype(np.int32) if entries > INT32_ENTRIES and num_tokens < 2**31 - 1 else np.dtype(np.int64)


def left_pad(values: np.ndarray, offsets: np.ndarray, length: int, dtype=np.int64) -> torch.Tensor:
    """[N, length] of ``dtype`` with each list's last ``length`` values right-aligned, 0 on the left."""
    n = len(offsets) - 1
    starts = np.maximum(offsets[:-1], offsets[1:] - length)
    kept = offsets[1:] - starts
    out = np.zeros(n * length, dtype=dtype)
    row = np.repeat(np.arange(n, dtype=np.int64), kept)
    first = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(kept, out=first[1:])
    pos = np.arange(first[-1], dtype=np.int64) - np.repeat(first[:-1], kept)
    src = np.repeat(starts, kept) + pos
    out[row * length + (length - np.repeat(kept, kept)) + pos] = values[src]
    return torch.from_numpy(out.reshape(n, length))


def t1_sequences(t1_dir: Path, length: int) -> torch.Tensor:
    """The padded token matrix of a prepared T1 folder (int32 when large, see ``INT32_ENTRIES``)."""
    col = pq.read_table(Path(t1_dir) / DATA, columns=["tokens"])["tokens"].combine_chunks()
    offsets = col.offsets.to_numpy().astype(np.int64)
    dtype = token_dtype(len(col) * length, int(read_meta(t1_dir)["num_items"]) + 2)
    values = col.flatten().to_numpy().astype(dtype, copy=False)  # flatten() honours a sliced offset
    return left_pad(values, offsets - offsets[0], length, dtype)


def load_task(prepared_dir: Path, t1_dir: Path | None = None) -> TaskData:
    """TaskData of a prepared folder; an item/class task finds its T1 via meta['t1']['path'].

    sequences are left-padded to the task's max_len (T1's for later tasks).
    """
    prepared_dir = Path(prepared_dir)
    meta = read_meta(prepared_dir)
    vocab = pq.read_table(prepared_dir / VOCAB)["id"].to_pylist()
    length = int(meta["max_len"])
    if meta["kind"] == "sequence":
        table = pq.read_table(prepared_dir / DATA, columns=["user_id", "split"])
        sequences, labels = t1_sequences(prepared_dir, length), None
    else:
        t1_dir = Path(t1_dir) if t1_dir is not None else (prepared_dir / meta["t1"]["path"]).resolve()
        if not (t1_dir / DATA).is_file():
            raise DataError(f"{prepared_dir}: its T1 data '{meta['t1']['name']}' ({meta['t1']['digest']}) is not "
                            f"at {t1_dir}; keep prepared tasks under one root or pass t1_dir.",
                            file=str(prepared_dir))
        table = pq.read_table(prepared_dir / DATA)
        rows = torch.from_numpy(table["t1_row"].to_numpy().astype(np.int64))
        sequences = t1_sequences(t1_dir, length).index_select(0, rows)
        raw = table["label"].to_numpy()
        # ids as int64; numbers (a kind whose labels are numbers) as float32, the model's precision
        labels = torch.from_numpy(raw.astype(np.float32 if raw.dtype.kind == "f" else np.int64))
    split = torch.from_numpy(table["split"].to_numpy().astype(np.int8))
    return TaskData(name=meta["name"], kind=meta["kind"], sequences=sequences, labels=labels, split=split,
                    user_ids=table["user_id"].to_pylist(), vocab=vocab, num_items=int(meta["num_items"]),
                    digest=meta["digest"], meta=meta)
