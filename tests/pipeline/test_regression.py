"""A regression task through the whole pipeline: learned with `conure learn` (Prefect + MLflow), reported
with its lower-is-better metric, served by `conure predict` and the registered pyfunc model, and kept
exactly while a later task is learned."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.pipeline.conftest import HOME, MAX_USER

USERS = ["7", "42", "300"]


def write_rating(dest: Path) -> Path:
    """Each subset user's mean rating over all their MovieLens-100K ratings (a number per user)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import yaml

    from conure_core.data.movielens import bundled_tables

    ratings, _ = bundled_tables()
    ratings = ratings.filter(pc.less_equal(ratings["user_id"], MAX_USER))
    means = ratings.group_by("user_id").aggregate([("rating", "mean")]).sort_by("user_id")
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "task.yaml").write_text(yaml.safe_dump({"name": "rating", "kind": "regression"}))
    pq.write_table(pa.table({"user_id": means["user_id"], "label": means["rating_mean"]}), dest / "data.parquet")
    return dest


def cli(*args: str) -> dict | str:
    from typer.testing import CliRunner

    from conure_cli.main import app

    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout) if "--json" in args else res.stdout


@pytest.fixture(scope="module")
def reg(task_dirs, preset_file) -> dict:
    """Lineage 'reg': clicks (T1), rating (regression), gender (class), each learned by `conure learn`."""
    rating = write_rating(HOME.parent / f"{HOME.name}-tasks" / "rating")
    for folder in (task_dirs[0], rating):
        cli("learn", str(folder), "--lineage", "reg", "--preset", preset_file, "--json")
    before = cli("predict", "--lineage", "reg", "--task", "rating", "--user", "42", "--json")
    report = cli("learn", str(task_dirs[2]), "--lineage", "reg", "--json")
    return {"report": report, "before": before}


def test_report_reads_rmse_as_lower_is_better(reg):
    rep = cli("report", "--lineage", "reg", "--json")
    assert rep["tasks"] == ["clicks", "rating", "gender"] and rep["kind"]["rating"] == "regression"
    assert rep["metric"]["rating"] == "rmse" and rep["lower_is_better"] == ["rating"]
    m = rep["matrix"]
    assert m[1][1] == m[2][1] and m[0][0] == m[1][0] == m[2][0]  # retention exact, the number's column too
    assert 0.0 < m[1][1] < 1.0  # RMSE of a mean rating in [1, 5], against a spread of about 0.45
    assert rep["backward_transfer"] == 0.0
    text = " ".join(cli("report", "--lineage", "reg").split())
    assert "rmse (lower is better)" in text


def test_predict_and_pyfunc_answer_the_same_number(reg):
    import mlflow
    import pandas as pd

    answers = {u: cli("predict", "--lineage", "reg", "--task", "rating", "--user", u, "--json") for u in USERS}
    assert reg["before"] == answers["42"]  # the state after gender answers the number exactly as before it
    assert all(set(a) == {"user", "task", "value"} and 1.0 <= a["value"] <= 5.0 for a in answers.values())
    head = mlflow.pyfunc.load_model("models:/conure-reg@head")
    rows = pd.DataFrame([{"user": u, "task": "rating"} for u in USERS])
    for model_answer, user in zip(head.predict(rows), USERS):
        assert model_answer["value"] == pytest.approx(answers[user]["value"], abs=1e-5)
    second = mlflow.pyfunc.load_model("models:/conure-reg@tasks-2")
    assert second.predict(rows) == head.predict(rows)  # the version after 'rating' answers it bit-identically
    assert "user 42 · rating: " in cli("predict", "--lineage", "reg", "--task", "rating", "--user", "42")
