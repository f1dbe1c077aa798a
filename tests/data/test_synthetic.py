"""The TTL-shaped generator, prepare_task_dir (no GX) and the ingest_scale benchmark at a tiny scale."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from conure_core.data.prepare import prepare_task_dir
from conure_core.data.prepared import load_task
from conure_core.data.synthetic import shape, ttl_tables, write_ttl_tasks


def test_shape_full_scale_numbers():
    s = shape(1.0)
    assert (s["users"], s["items"], s["seq_len"], s["item_rows"], s["class_rows"]) == \
        (1_470_000, 646_000, 100, 2_700_000, 1_470_000)


def test_tables_small_scale_are_deterministic():
    a, b = ttl_tables(0.002, seed=3), ttl_tables(0.002, seed=3)
    assert all(a[k].equals(b[k]) for k in a)
    t1 = a["T1"]
    assert t1.num_rows == 2940 and set(pc.list_value_length(t1["items"]).to_pylist()) == {100}
    assert len(np.unique(pc.list_flatten(t1["items"]).to_numpy())) == shape(0.002)["items"]
    assert len(set(t1["user_id"].to_pylist())) == 2940
    unknown = ~np.isin(a["T2"]["user_id"].to_numpy(), t1["user_id"].to_numpy())
    assert 0.002 < unknown.mean() < 0.03  # a few unknown users to exercise the quarantine


def test_prepare_task_dir_without_validation(tmp_path):
    folders = write_ttl_tasks(tmp_path / "tasks", scale=0.001)
    t1 = prepare_task_dir(folders[0], tmp_path / "out")
    t2 = prepare_task_dir(folders[1], tmp_path / "out", t1)
    assert prepare_task_dir(folders[0], tmp_path / "out2") .name == t1.name  # same digest elsewhere
    d1, d2 = load_task(t1), load_task(t2)
    assert tuple(d1.sequences.shape) == (1470, 100) and d1.sequences.min() >= 1
    raw = pq.read_table(folders[1] / "data.parquet")
    assert d2.meta["quarantined"] + d2.meta["duplicates_dropped"] + len(d2.labels) == raw.num_rows


def test_ingest_scale_benchmark_tiny(capsys):
    from benchmarks.ingest_scale import main
    line = main(["--scale", "0.001"])
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1]) == line
    assert line["benchmark"] == "ingest_scale" and set(line["targets"]) == {"wall_s", "peak_gib", "speedup_vs_pandas"}
    f = line["figures"]
    assert f["t1_users"] == 1470 and f["wall_s"] > 0 and f["peak_gib"] > 0 and f["pandas_wall_s"] > 0
