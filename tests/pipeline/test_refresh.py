"""`conure refresh`: a T1 update refreshes the stored histories `user` answers read (same weights, new
registered version, an MLflow run); the capacity forecast in the report, MLflow and learn's warning."""
from __future__ import annotations

import json
import shutil

import pytest

from tests.pipeline.conftest import HOME, tiny_preset

LINEAGE = "e2e-fresh"


def cli(*args: str) -> dict:
    from typer.testing import CliRunner

    from conure_cli.main import app

    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def answer(task: str, *who: str) -> dict:
    out = cli("predict", "--lineage", LINEAGE, "--task", task, *who, "-k", "5", "--json")
    return {k: v for k, v in out.items() if k not in ("user", "unknown_items")}


@pytest.fixture(scope="module")
def fresh(learned, tmp_path_factory):
    """A lineage sharing e2e's learned states (its own HEAD and registered model), refreshed by an update
    in which user 7 now has user 42's history and a new user arrives; returns (update output, before)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.serving import Predictor
    from tasks.store import LineageStore

    store = LineageStore()
    head = store.require_head("e2e").model_copy(update={"lineage": LINEAGE})
    store.layout.lineage_dir(LINEAGE).mkdir(parents=True, exist_ok=True)
    store.write_head(head)
    served = Predictor(store.state_path(head.state_digest), store.prepared_abs(head.tasks[0]))
    before = {t: answer(t, "--user", "7") for t in ("clicks", "liked", "gender")}
    update = tmp_path_factory.mktemp("update") / "clicks-update"
    update.mkdir()
    (update / "task.yaml").write_text("name: clicks-update\nkind: sequence\n")
    newcomer = served.history_of("300")[:6] + ["no-such-item"]
    pq.write_table(pa.table({"user_id": ["7", "new-1"], "items": [served.history_of("42"), newcomer]}),
                   update / "data.parquet")
    out = cli("refresh", str(update), "--lineage", LINEAGE, "--json")
    yield out, before, served
    shutil.rmtree(store.layout.lineage_dir(LINEAGE), ignore_errors=True)


def test_refresh_counts_and_points_head_at_the_new_histories(fresh):
    out, _, _ = fresh
    h = out["histories"]
    assert (h["updated"], h["added"], h["unknown_items"], h["skipped_users"]) == (1, 1, 1, 0)
    report = cli("report", "--lineage", LINEAGE, "--json")
    assert report["histories"]["digest"] == h["digest"] and report["state_digest"] == out["state_digest"]


def test_known_user_answers_follow_their_new_history(fresh):
    _, before, served = fresh
    for task in ("clicks", "liked", "gender"):
        now = answer(task, "--user", "7")
        assert now == answer(task, "--items", ",".join(served.history_of("42"))), task
    assert answer("liked", "--user", "7") != before["liked"]
    assert answer("liked", "--user", "new-1") == answer("liked", "--items", ",".join(served.history_of("300")[:6]))


def test_registered_head_version_has_the_same_weights_and_the_fresh_histories(fresh):
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    out, _, _ = fresh
    client = MlflowClient(tracking_uri=f"sqlite:///{HOME / 'mlflow.db'}")
    version = client.get_model_version_by_alias(f"conure-{LINEAGE}", "head")
    assert str(version.version) == out["version"]
    assert version.tags["state_digest"] == out["state_digest"] and version.tags["histories_digest"] == out["histories"]["digest"]
    run = client.get_run(version.run_id)
    assert run.data.tags["conure.stage"] == "refresh" and run.data.metrics["refresh/added"] == 1.0
    model = mlflow.pyfunc.load_model(f"models:/conure-{LINEAGE}@head")
    [row] = model.predict(pd.DataFrame([{"user": "7", "task": "liked"}]), params={"k": 5})
    assert {k: v for k, v in row.items() if k != "user"} == answer("liked", "--user", "7")


def test_the_same_update_again_changes_nothing(fresh):
    out, _, _ = fresh
    from flows.refresh import refresh_histories

    again = refresh_histories(update_dir=out["histories"]["source"], lineage=LINEAGE)
    assert again["histories"]["digest"] == out["histories"]["digest"] and again["version"] == out["version"]
    assert (again["histories"]["updated"], again["histories"]["added"]) == (2, 0)


def test_capacity_forecast_in_report_and_mlflow(learned):
    from mlflow import MlflowClient

    report = cli("report", "--lineage", "e2e", "--json")
    cap = report["capacity"]
    total = cap["layers"]["total"]
    assert total["free"] == pytest.approx(report["free_capacity"][-1], abs=1e-6)
    assert sum(total["taken"].values()) == pytest.approx(1 - total["free"], abs=1e-5)
    assert cap["fits"] == min(v["fits"] for v in cap["layers"].values())
    client = MlflowClient(tracking_uri=f"sqlite:///{HOME / 'mlflow.db'}")
    exp = client.get_experiment_by_name("e2e")
    # the flow run that registered the last task (a re-run of all cache hits logs no step metrics)
    flow = client.search_runs([exp.experiment_id], "tags.`conure.flow` = 'learn-tasks' and metrics.`capacity/fits` >= 0")[0]
    assert flow.data.metrics["capacity/fits"] == cap["fits"]
    assert flow.data.metrics["capacity/total/free"] == pytest.approx(total["free"], abs=1e-6)


def test_learn_warns_before_a_task_that_would_leave_less_than_min_free(capsys):
    from flows.chain import Slot, warn_capacity
    from tasks.store import Head, LearnedTask

    preset = tiny_preset()
    preset["model"]["min_free"] = 0.5
    t1 = LearnedTask(name="clicks", kind="sequence", prepared_digest="d", prepared_path="p",
                     free_capacity={"total": 0.7, "conv": 0.7})
    head = Head(lineage="w", config=preset, tasks=[t1])
    warn_capacity(head, Slot(1, {"name": "liked", "kind": "item", "manifest": {}}, "s", [t1]))  # 0.7 * 0.8 = 0.56
    assert capsys.readouterr().err == ""
    liked = {"name": "liked", "kind": "item", "manifest": {"prune_ratio": 0.6}}
    warn_capacity(head, Slot(1, liked, "s", [t1]))  # 0.7 * 0.6 = 0.42 < 0.5
    assert capsys.readouterr().err.strip() == (
        "lineage 'w': capacity: learning 'liked' is expected to leave 42.0% of the backbone's prunable weights free "
        "(at prune ratio 0.6; 70.0% free now), below min_free 50.0%; prune harder (a higher prune_ratio in task.yaml "
        "or the preset), give a new lineage a wider backbone (model.width), or start a new lineage for the next tasks.")


def test_report_shows_the_catalogue_size_per_task(learned):
    from mlflow import MlflowClient

    from tasks.adapters import load_lineage
    from tasks.store import LineageStore

    store = LineageStore()
    model = load_lineage(store.state_path(store.require_head("e2e").state_digest))
    new = model.info("liked").new_items  # films liked by the subset's users that no T1 history holds
    report = cli("report", "--lineage", "e2e", "--json")
    assert report["catalogue"] == [model.num_items, model.num_items + len(new), model.num_items + len(new)]
    assert new and model.info("gender").new_items == []
    client = MlflowClient(tracking_uri=f"sqlite:///{HOME / 'mlflow.db'}")
    exp = client.get_experiment_by_name("e2e")
    runs = client.search_runs([exp.experiment_id], "tags.`conure.stage` = 'evaluate' and tags.`conure.task` = 'liked'")
    assert runs and {r.data.metrics["catalogue/items"] for r in runs} == {report["catalogue"][1]}


def test_predict_needs_exactly_one_of_user_or_items(learned):
    from typer.testing import CliRunner

    from conure_cli import exits
    from conure_cli.main import app

    for extra in ([], ["--user", "7", "--items", "1,2"]):
        res = CliRunner().invoke(app, ["predict", "--lineage", "e2e", "--task", "liked", *extra])
        assert exits.exit_code(res.exception) == exits.REFUSED  # what `conure` exits with
        assert str(res.exception) == "pass exactly one of --user (a stored user) or --items (a history, e.g. 12,54,77)."
    res = CliRunner().invoke(app, ["predict", "--lineage", "e2e", "--task", "liked", "--items", "nope,never"])
    assert str(res.exception).startswith("the history has no item task 'liked' knows (2 item id(s)")
