"""The bundled signal suite: label rules on a hand-made table, the real folders, and the suite switch."""
from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

from conure_core.data.errors import DataError
from conure_core.data.signal_suite import SIGNAL_TASK_NAMES, signal_labels
from conure_core.data.suites import suite_task_names, write_suite


def test_label_rules_on_a_hand_made_table():
    items = pd.DataFrame({"item_id": [1, 2, 3], "release_date": ["01-Jan-1950", "01-Jan-1990", "01-Jan-1998"],
                          "unknown": [0, 0, 0], "Action": [1, 0, 0], "Drama": [0, 1, 1]})
    rows = []
    for user, liked, mean_low in ((1, [1] * 5, 1), (2, [2] * 5, 3), (3, [3] * 5, 2), (4, [1, 2, 3], 1)):
        rows += [(user, item, 5) for item in liked] + [(user, 1, mean_low)] * 5
    ratings = pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])
    labels = signal_labels(ratings, items)
    # Users with >= 5 films rated 4+ only (user 4 has 3); era: median years 1950 / 1990 / 1998 -> terciles.
    assert labels["era"].to_dict() == {1: "old", 2: "mid", 3: "new"}
    # Among kept users' 4+ ratings Action is 1/3 and Drama 2/3: user 1 (all Action) has lift 3 for Action.
    assert labels["genre"].to_dict() == {1: "Action", 2: "Drama", 3: "Drama"}
    # Mean ratings over all users: 3.0, 4.0, 3.5, 2.5 -> tercile edges 3.0 and 3.5 (right-closed bins).
    assert labels["rater"].to_dict() == {1: "low", 2: "high", 3: "mid", 4: "low"}
    assert labels["rating"].to_dict() == {1: 3.0, 2: 4.0, 3: 3.5, 4: 2.5}  # the regression task: the mean itself


def test_signal_folders(tmp_path):
    folders = write_suite("signal", tmp_path)
    assert [f.name for f in folders] == list(SIGNAL_TASK_NAMES) == list(suite_task_names("signal"))
    t1 = pq.read_table(folders[0] / "data.parquet")
    assert t1.num_rows == 929 and "max_len: 100" in (folders[0] / "task.yaml").read_text()
    sizes = {f.name: pq.read_table(f / "data.parquet").to_pandas() for f in folders[1:-1]}
    assert {n: df.label.nunique() for n, df in sizes.items()} == {"era": 3, "genre": 18, "rater": 3}
    rating = pq.read_table(folders[-1] / "data.parquet").to_pandas()
    assert "kind: regression" in (folders[-1] / "task.yaml").read_text() and rating.label.dtype == "float64"
    assert len(rating) == 929 and rating.label.between(1.0, 5.0).all()
    assert len(sizes["rater"]) == 929 and len(sizes["era"]) == len(sizes["genre"]) < 929
    assert set(sizes["era"].user_id) <= set(t1["user_id"].to_pylist())


def test_unknown_suite_is_one_sentence(tmp_path):
    with pytest.raises(DataError, match="unknown bundled suite 'nope'; choose one of default, signal"):
        write_suite("nope", tmp_path)
