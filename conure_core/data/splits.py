"""Deterministic 80/5/15 splits by a seeded hash, stable when rows are added."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from .types import TEST, TRAIN, VALID

FRACTIONS = (0.80, 0.05, 0.15)
_BUCKETS = 10_000


def _hash_key(seed: int) -> str:
    return f"conure{seed:010d}"[-16:].rjust(16, "0")


def hash_strings(keys: pa.Array, seed: int = 0) -> np.ndarray:
    """uint64 SipHash of each string (pandas' keyed hash: stable across runs and machines)."""
    values = keys.to_numpy(zero_copy_only=False)
    return pd.util.hash_array(np.asarray(values, dtype=object), hash_key=_hash_key(seed), categorize=False)


def assign_splits(keys: pa.Array, seed: int = 0, fractions=FRACTIONS) -> np.ndarray:
    """int8 TRAIN/VALID/TEST per key; a key's split depends only on the key and the seed."""
    bucket = hash_strings(keys, seed) % np.uint64(_BUCKETS)
    train_end = int(round(fractions[0] * _BUCKETS))
    valid_end = int(round((fractions[0] + fractions[1]) * _BUCKETS))
    out = np.full(len(bucket), TEST, dtype=np.int8)
    out[bucket < train_end] = TRAIN
    out[(bucket >= train_end) & (bucket < valid_end)] = VALID
    return out


def split_counts(split: np.ndarray) -> dict[str, int]:
    """Rows per split name."""
    counts = np.bincount(split.astype(np.int64), minlength=3)
    return {"train": int(counts[TRAIN]), "valid": int(counts[VALID]), "test": int(counts[TEST])}
