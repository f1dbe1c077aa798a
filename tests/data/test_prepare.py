"""Preparation: digests, byte-identical re-runs, formats, stable splits, load_task, atomic writes."""
from __future__ import annotations

import filecmp

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conure_core.data import prepare as prep
from conure_core.data.lineformat import write_line_tasks
from conure_core.data.prepared import left_pad, load_task
from conure_core.data.splits import assign_splits
from conure_core.data.types import TEST, TRAIN, VALID
from data_contracts.ingest import PreparedRef, ingest_task, validate_task_dir

from .conftest import make_task


def _ingest_all(folders, out):
    refs, t1 = [], None
    for f in folders:
        ref = ingest_task(f, out, t1)
        t1 = ref if ref.kind == "sequence" else t1
        refs.append(ref)
    return refs


def test_bundled_tasks_validate_and_reprepare_identically(bundled, tmp_path):
    a = _ingest_all(bundled, tmp_path / "a")
    b = _ingest_all(bundled, tmp_path / "b")
    assert [r.digest for r in a] == [r.digest for r in b]
    assert [r.rows for r in a] == [929, 34016, 20989, 929, 929, 929]
    assert all(r.quarantined == 0 for r in a)
    for ra, rb in zip(a, b):
        names = sorted(p.name for p in ra.path.iterdir())
        assert names == sorted(p.name for p in rb.path.iterdir())
        assert all(filecmp.cmp(ra.path / n, rb.path / n, shallow=False) for n in names)
        assert ra.path.name == ra.digest and PreparedRef.from_dir(ra.path) == ra
    # Running again into the same root reuses the folder: no second copy, no temp left.
    again = ingest_task(bundled[1], tmp_path / "a", a[0])
    assert again.path == a[1].path and not list((tmp_path / "a" / "liked").glob(".tmp-*"))
    for f, ref in zip(bundled, a):
        s = validate_task_dir(f, None if ref.kind == "sequence" else a[0])
        assert s.ok and "OK" in str(s), str(s)


def test_load_task_bundled(bundled, t1_ref):
    t1 = load_task(t1_ref.path)
    raw = pq.read_table(bundled[0] / "data.parquet").to_pylist()
    assert t1.kind == "sequence" and tuple(t1.sequences.shape) == (929, 30) and t1.labels is None
    assert t1.num_items == len(t1.vocab) == t1.num_labels and t1.separator == t1.num_items + 1
    assert t1.digest == t1_ref.digest and t1.user_ids[:3] == ["1", "2", "3"]
    for i in (0, 5, 928):
        items = raw[i]["items"]
        row = t1.sequences[i].tolist()
        assert row[: 30 - len(items)] == [0] * (30 - len(items))
        assert [t1.vocab[t - 1] for t in row[30 - len(items):]] == [str(x) for x in items]
    sizes = [len(t1.rows(s)) for s in ("train", "valid", "test")]
    assert sum(sizes) == 929 and sizes == [t1_ref.splits[k] for k in ("train", "valid", "test")]
    gender = load_task(ingest_task(bundled[3], t1_ref.path.parent.parent, t1_ref).path)
    g = pq.read_table(bundled[3] / "data.parquet").to_pandas().set_index("user_id")["label"]
    assert gender.vocab == ["F", "M"] and gender.num_labels == 2
    for i in (0, 100, 928):
        uid = gender.user_ids[i]
        assert gender.vocab[int(gender.labels[i])] == g[int(uid)]
        assert gender.sequences[i].tolist() == t1.sequences[t1.user_ids.index(uid)].tolist()


def test_long_csv_and_list_parquet_give_same_digest(tmp_path):
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(50), 6)
    items = rng.integers(0, 40, len(users))
    ts = np.tile(np.arange(6), 50)
    order = rng.permutation(len(users))  # shuffled rows: order within a user comes from timestamps
    csv = "user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in
                                                  zip(users[order], items[order], ts[order]))
    a = make_task(tmp_path, "seq", "sequence", csv=csv.encode(), folder="long",
                  manifest={"name": "seq", "kind": "sequence", "max_len": 4})
    lists = pa.array([items[users == u].tolist() for u in range(50)])
    b = make_task(tmp_path, "seq", "sequence", pa.table({"user_id": np.arange(50)[::-1], "items": lists[::-1]}),
                  folder="list", manifest={"name": "seq", "kind": "sequence", "max_len": 4})
    ra, rb = ingest_task(a, tmp_path / "out"), ingest_task(b, tmp_path / "out")
    assert ra.digest == rb.digest and ra.rows == 50
    t = load_task(ra.path)
    assert [t.vocab[x - 1] for x in t.sequences[7].tolist()] == [str(x) for x in items[users == 7][-4:]]


def test_splits_are_stable_when_rows_are_added(tmp_path, t1_ref):
    keys = pa.array([f"user{i}" for i in range(20000)])
    split = assign_splits(keys, seed=0)
    frac = np.bincount(split, minlength=3) / len(split)
    assert abs(frac[TRAIN] - 0.80) < 0.01 and abs(frac[VALID] - 0.05) < 0.005 and abs(frac[TEST] - 0.15) < 0.01
    assert np.array_equal(assign_splits(keys.slice(0, 5000), seed=0), split[:5000])
    assert not np.array_equal(assign_splits(keys, seed=1), split)
    # Through the whole pipeline: a label task with more rows keeps the old rows' splits.
    t1 = load_task(t1_ref.path)
    users = np.array([int(u) for u in t1.user_ids])
    small = pa.table({"user_id": users[:300], "label": users[:300] % 7})
    big = pa.table({"user_id": users, "label": users % 7})
    ra = ingest_task(make_task(tmp_path, "lab", "class", small, folder="s"), tmp_path / "o", t1_ref)
    rb = ingest_task(make_task(tmp_path, "lab", "class", big, folder="b"), tmp_path / "o", t1_ref)
    da, db = pq.read_table(ra.path / "data.parquet").to_pandas(), pq.read_table(rb.path / "data.parquet").to_pandas()
    merged = da.merge(db, on="user_id", suffixes=("_a", "_b"))
    assert len(merged) == 300 and (merged.split_a == merged.split_b).all()


def test_string_ids_and_truncation(tmp_path):
    table = pa.table({"user_id": ["bob", "amy", "cat"],
                      "items": [["x", "y", "z", "w"], ["y", "y"], ["q", "x"]]})
    ref = ingest_task(make_task(tmp_path, "s", "sequence", table, manifest={"name": "s", "kind": "sequence",
                                                                            "max_len": 3}), tmp_path / "o")
    t = load_task(ref.path)
    assert t.user_ids == ["amy", "bob", "cat"] and t.vocab == ["q", "w", "x", "y", "z"]
    assert t.sequences.tolist() == [[0, 4, 4], [4, 5, 2], [0, 1, 3]]


def test_some_unknown_users_are_quarantined_and_counted(tmp_path, t1_ref):
    t1 = load_task(t1_ref.path)
    known = [int(u) for u in t1.user_ids[:70]]
    users = known + list(range(5000, 5030))
    ref = ingest_task(make_task(tmp_path, "part", "item", pa.table({"user_id": users, "label": [1] * 100})),
                      tmp_path / "o", t1_ref, known_user_floor=0.5)
    assert ref.rows == 70 and ref.quarantined == 30
    q = pq.read_table(ref.path / prep.QUARANTINE).to_pydict()
    assert q["user_id"] == [str(u) for u in range(5000, 5030)] and set(q["reason"]) == {"user unknown to T1"}
    s = validate_task_dir(ref.path.parent.parent.parent / "part", t1_ref)
    assert s.ok and s.unknown_users == 30 and "30 users unknown to T1" in str(s)


def test_duplicate_label_rows_are_dropped_and_counted(tmp_path, t1_ref):
    u = int(load_task(t1_ref.path).user_ids[0])
    ref = ingest_task(make_task(tmp_path, "d", "item", pa.table({"user_id": [u, u, u], "label": [9, 9, 8]})),
                      tmp_path / "o", t1_ref)
    assert ref.rows == 2 and ref.duplicates_dropped == 1


def test_failed_write_leaves_nothing(tmp_path, t1_ref, monkeypatch):
    real = pq.write_table
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(prep.pq, "write_table", flaky)
    t1 = load_task(t1_ref.path)
    folder = make_task(tmp_path, "w", "class", pa.table({"user_id": [int(u) for u in t1.user_ids[:50]],
                                                         "label": [0, 1] * 25}))
    with pytest.raises(OSError):
        ingest_task(folder, tmp_path / "o", t1_ref)
    assert not (tmp_path / "o" / "w").exists()


def test_left_pad():
    out = left_pad(np.array([1, 2, 3, 4, 5, 6]), np.array([0, 1, 1, 6]), 3)
    assert out.tolist() == [[0, 0, 1], [0, 0, 0], [4, 5, 6]]


def test_line_format(tmp_path):
    (tmp_path / "t1.txt").write_text("5,6,7\n7,8,9,10\n1,2\n")
    (tmp_path / "t2.txt").write_text("5,6,7,,100,101\n1,2,,102\n3,3,,104\n")
    folders = write_line_tasks(tmp_path / "t1.txt", [("t2", "item", tmp_path / "t2.txt")], tmp_path / "tasks",
                               max_len=3)
    r1 = ingest_task(folders[0], tmp_path / "o")
    r2 = ingest_task(folders[1], tmp_path / "o", r1)
    assert (r2.rows, r2.quarantined) == (3, 1)
    t1, t2 = load_task(r1.path), load_task(r2.path)
    assert t1.vocab == ["1", "2", "5", "6", "7", "8", "9", "10"]
    assert t2.vocab == ["100", "101", "102"] and t2.labels.tolist() == [0, 1, 2]
    assert t2.sequences.tolist() == [[3, 4, 5], [3, 4, 5], [0, 1, 2]]  # mapped through T1's vocabulary


def test_user_folders_in_each_format_validate_and_reprepare_identically(tmp_path):
    rng = np.random.default_rng(1)
    users = np.repeat(np.arange(40), 5)
    items = rng.integers(100, 160, len(users))
    ts = rng.integers(0, 10**9, len(users))
    long_rows = "".join(f"u{u},i{i},{t}\n" for u, i, t in zip(users, items, ts))
    lists = [items[users == u][np.argsort(ts[users == u], kind="stable")].tolist() for u in range(40)]
    folders = {
        "long_csv_str": make_task(tmp_path, "t1", "sequence", csv=("user_id,item_id,timestamp\n" + long_rows).encode(),
                                  folder="a"),
        "long_parquet": make_task(tmp_path, "t1", "sequence",
                                  pa.table({"user_id": users, "item_id": items, "timestamp": ts}), folder="b"),
        "long_renamed": make_task(tmp_path, "t1", "sequence", pa.table({"user_id": users, "item_id": items, "ts": ts}),
                                  folder="f", manifest={"name": "t1", "kind": "sequence",
                                                        "columns": {"timestamp": "ts"}}),
        "list_parquet": make_task(tmp_path, "t1", "sequence", pa.table({"user_id": np.arange(40), "items": lists}),
                                  folder="c"),
    }
    labels = {
        "label_csv": make_task(tmp_path, "lab", "item", csv=("user_id,label\n" + "".join(
            f"{u},{u % 9}\n" for u in range(0, 40, 2))).encode(), folder="d"),
        "label_parquet_str": make_task(tmp_path, "lab", "class", pa.table(
            {"user_id": [str(u) for u in range(40)], "label": [("x", "y")[u % 2] for u in range(40)]}), folder="e"),
    }
    digests = {}
    for key, folder in folders.items():
        assert validate_task_dir(folder).ok, key
        a, b = ingest_task(folder, tmp_path / "o1"), ingest_task(folder, tmp_path / "o2")
        assert a.digest == b.digest and a.rows == 40, key
        digests[key] = a
    # Same rows and manifest -> same digest whatever the layout (the digest covers data + manifest).
    assert digests["long_parquet"].digest == digests["list_parquet"].digest
    assert pq.read_table(digests["long_renamed"].path / "data.parquet").equals(
        pq.read_table(digests["list_parquet"].path / "data.parquet"))
    t1a, t1b = digests["list_parquet"], PreparedRef.from_dir(tmp_path / "o2" / "t1" / digests["list_parquet"].digest)
    for key, folder in labels.items():
        assert validate_task_dir(folder, t1a).ok, key
        a, b = ingest_task(folder, tmp_path / "o1", t1a), ingest_task(folder, tmp_path / "o2", t1b)
        assert a.digest == b.digest and a.quarantined == 0, key


def test_max_len_cut_is_counted_in_validate_and_the_prepared_table(tmp_path):
    """The default max_len used to drop old interactions of long users without a word (issue 17)."""
    csv = "user_id,item_id,timestamp\n" + "".join(f"{u},{i},{i}\n" for u in range(4) for i in range(2 + u))
    folder = make_task(tmp_path, "s", "sequence", csv=csv.encode(), manifest={"name": "s", "kind": "sequence",
                                                                              "max_len": 3})
    summary = validate_task_dir(folder)
    assert (summary.rows, summary.users, summary.interactions) == (14, 4, 14)  # long format: a row per interaction
    assert (summary.interactions_dropped, summary.users_cut, summary.max_len) == (3, 2, 3)  # users 2 and 3: 1 + 2
    assert str(summary) == ("s (sequence, data.csv): OK, 14 interactions of 4 users.\n  s: max_len 3 keeps each "
                            "user's last 3 interactions: 3 of 14 interactions (2 of 4 users) are left out; raise "
                            "max_len in task.yaml to keep them.")
    ref = ingest_task(folder, tmp_path / "out")
    assert (ref.interactions, ref.interactions_dropped, ref.users_cut) == (14, 3, 2)
    assert ref.cut_note() == str(summary).split("\n  ")[1]
