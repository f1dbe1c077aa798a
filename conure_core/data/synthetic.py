"""TTL-shaped synthetic task folders (paper Table 1 shape): 1.47M users x 100 recent items over
646K items (T1), 2.7M (user, item) rows (an item task) and 1.47M (user, class) rows (a class task).

Item popularity is skewed (power law), a small share of the label rows belong to users unknown
to T1 (they exercise the quarantine), and everything is vectorised numpy: full scale takes seconds.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

FULL = {"users": 1_470_000, "items": 646_000, "seq_len": 100, "item_rows": 2_700_000,
        "item_labels": 18_000, "class_rows": 1_470_000, "classes": 8}


def shape(scale: float = 1.0) -> dict:
    """Sizes at a scale (sequence length stays 100)."""
    out = {k: max(int(round(v * scale)), 10) for k, v in FULL.items()}
    out["seq_len"], out["classes"] = FULL["seq_len"], FULL["classes"]
    return out


def ttl_tables(scale: float = 1.0, seed: int = 0, unknown_share: float = 0.01) -> dict[str, pa.Table]:
    """{'T1': user_id, items (list<int32>); 'T2': user_id, label; 'T3': user_id, label}."""
    s = shape(scale)
    rng = np.random.default_rng(seed)
    # Sparse, shuffled user ids, as exported ids are not 0..N-1.
    users = rng.choice(s["users"] * 4, size=s["users"], replace=False).astype(np.int64)
    n_items = s["users"] * s["seq_len"]
    items = (rng.random(n_items, dtype=np.float32) ** 3 * s["items"]).astype(np.int32)
    items[: s["items"]] = np.arange(s["items"], dtype=np.int32)  # every item occurs at least once
    offsets = np.arange(0, n_items + 1, s["seq_len"], dtype=np.int32)
    t1 = pa.table({"user_id": users, "items": pa.ListArray.from_arrays(pa.array(offsets), pa.array(items))})
    del items

    def label_users(n: int) -> np.ndarray:
        u = users[rng.integers(0, len(users), n)]
        unknown = rng.random(n) < unknown_share
        u[unknown] = -1 - rng.integers(0, 10**9, int(unknown.sum()))  # ids T1 never saw
        return u

    t2_labels = (rng.random(s["item_rows"]) ** 2 * s["item_labels"]).astype(np.int64) * 37 + 11
    t2 = pa.table({"user_id": label_users(s["item_rows"]), "label": t2_labels})
    cls_users = users[rng.permutation(len(users))[: s["class_rows"]]] if s["class_rows"] <= len(users) \
        else label_users(s["class_rows"])
    t3 = pa.table({"user_id": cls_users, "label": rng.integers(0, s["classes"], len(cls_users))})
    return {"T1": t1, "T2": t2, "T3": t3}


def write_ttl_tasks(dest: Path, scale: float = 1.0, seed: int = 0) -> list[Path]:
    """Write T1 (sequence), T2 (item), T3 (class) task folders under ``dest``; returns them in order."""
    dest = Path(dest)
    kinds = {"T1": "sequence", "T2": "item", "T3": "class"}
    out = []
    for name, table in ttl_tables(scale, seed).items():
        folder = dest / name
        folder.mkdir(parents=True, exist_ok=True)
        manifest = {"name": name, "kind": kinds[name]}
        if name == "T1":
            manifest["max_len"] = 100
        (folder / "task.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
        pq.write_table(table, folder / "data.parquet", compression="zstd")
        out.append(folder)
    return out
