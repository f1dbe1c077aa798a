"""Bundled MovieLens-100K task folders and the GroupLens readers."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from conure_core.data.movielens import (AGE_CODES, TASK_NAMES, age_codes, bundled_files, bundled_tables,
                                        write_grouplens_tasks, write_tasks)


def _read(folder):
    return pq.read_table(folder / "data.parquet")


def test_bundled_tasks_shape(bundled):
    assert [p.name for p in bundled] == list(TASK_NAMES)
    clicks = _read(bundled[0])
    lens = pa.compute.list_value_length(clicks["items"]).to_numpy()
    assert clicks.num_rows == 929 and lens.min() == 3 and lens.max() == 30
    assert clicks["user_id"].to_pylist() == sorted(clicks["user_id"].to_pylist())
    assert _read(bundled[1]).num_rows == 34016 and _read(bundled[2]).num_rows == 20989
    users = set(clicks["user_id"].to_pylist())
    for folder, n_labels in zip(bundled[3:], (2, 7, 21)):
        t = _read(folder)
        assert t.num_rows == 929 and set(t["user_id"].to_pylist()) == users
        assert len(set(t["label"].to_pylist())) == n_labels
    assert set(_read(bundled[4])["label"].to_pylist()) == set(AGE_CODES)
    assert "max_len: 30" in (bundled[0] / "task.yaml").read_text()


def test_clicks_are_last_30_by_stable_timestamp_order(bundled):
    ratings, _ = bundled_tables()
    r = ratings.to_pandas()
    r = r[r.rating <= 3].sort_values(["user_id", "timestamp"], kind="stable")  # stable: file order on ties
    ref = r.groupby("user_id")["item_id"].apply(lambda s: list(s.iloc[-30:]))
    ref = ref[r.groupby("user_id").size() >= 3]
    got = _read(bundled[0]).to_pandas().set_index("user_id")["items"].map(list)
    assert got.index.tolist() == ref.index.tolist()
    assert (got == ref).all()
    # Ties exist and the order among them follows the file: user 1's clicks at equal timestamps.
    assert r.duplicated(["user_id", "timestamp"]).sum() > 5000


def test_age_buckets():
    ages = pa.chunked_array([[7, 17, 18, 24, 25, 34, 35, 44, 45, 49, 50, 55, 56, 73]])
    assert age_codes(ages).to_pylist() == [1, 1, 18, 18, 25, 25, 35, 35, 45, 45, 50, 50, 56, 56]


def test_grouplens_100k_matches_bundled(bundled, tmp_path):
    ratings, _ = bundled_tables()
    raw_users = pq.read_table(bundled_files()["users"])
    src = tmp_path / "ml-100k"
    src.mkdir()
    ratings.to_pandas().to_csv(src / "u.data", sep="\t", header=False, index=False)
    u = raw_users.to_pandas()[["user_id", "age", "gender", "occupation", "zip_code"]]
    u.to_csv(src / "u.user", sep="|", header=False, index=False)
    made = write_grouplens_tasks(src, tmp_path / "tasks")
    assert [p.name for p in made] == list(TASK_NAMES)
    for a, b in zip(made, bundled):
        assert _read(a).equals(_read(b)), a.name


def test_grouplens_1m_format(tmp_path):
    src = tmp_path / "ml-1m"
    src.mkdir()
    rows = ["1::10::3::100", "1::11::2::100", "1::12::1::99", "1::13::4::101", "2::10::5::5",
            "2::11::3::6", "2::12::3::7", "2::14::2::8", "3::10::1::1"]
    (src / "ratings.dat").write_text("\n".join(rows) + "\n")
    (src / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n")
    made = write_grouplens_tasks(src, tmp_path / "tasks")
    clicks = _read(made[0]).to_pylist()
    assert clicks == [{"user_id": 1, "items": [12, 10, 11]}, {"user_id": 2, "items": [11, 12, 14]}]
    assert _read(made[1]).to_pylist() == [{"user_id": 1, "label": 13}]
    assert _read(made[2]).to_pylist() == [{"user_id": 2, "label": 10}]
    assert _read(made[4]).to_pylist() == [{"user_id": 1, "label": 1}, {"user_id": 2, "label": 56}]
    assert _read(made[5])["label"].to_pylist() == [10, 16]


def test_grouplens_25m_half_stars_no_profiles(tmp_path):
    src = tmp_path / "ml-25m"
    src.mkdir()
    (src / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,5,3.5,10\n1,6,0.5,11\n1,7,2.0,12\n"
                                     "1,8,4.5,13\n1,9,5.0,14\n1,10,4.0,15\n")
    made = write_grouplens_tasks(src, tmp_path / "tasks")
    assert [p.name for p in made] == ["clicks", "liked", "loved"]
    assert _read(made[0]).to_pylist() == [{"user_id": 1, "items": [5, 6, 7]}]
    assert sorted(_read(made[1])["label"].to_pylist()) == [8, 10]
    assert _read(made[2])["label"].to_pylist() == [9]


def test_write_tasks_drops_short_users(tmp_path):
    ratings = pa.table({"user_id": [1, 1, 2, 2, 2], "item_id": [1, 2, 3, 4, 5], "rating": [1, 1, 2, 2, 2],
                        "timestamp": [3, 3, 1, 2, 3]})
    made = write_tasks(ratings, None, tmp_path, min_len=3)
    assert _read(made[0]).to_pylist() == [{"user_id": 2, "items": [3, 4, 5]}]
    assert np.array_equal(_read(made[1])["label"].to_numpy(), np.array([], dtype=np.int64))
