"""Readable runs: MLflow context tags, the model-training view, validations with their runs,
backfills compared in their source's experiment, parallel backfills computing a shared step once."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.pipeline.conftest import HOME, TASKS

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client():
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{HOME / 'mlflow.db'}")


def _runs(client, experiment: str, query: str = "") -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], query, max_results=1000)


def test_experiment_opens_in_the_model_training_view(learned, client):
    assert client.get_experiment_by_name("e2e").tags["mlflow.experimentKind"] == "custom_model_development"


def test_runs_carry_source_commit_versions_and_device(learned, client):
    import importlib.metadata as md

    from tasks.settings import code_version

    flow = _runs(client, "e2e", "tags.`conure.flow` = 'learn-tasks'")[0]
    tags = flow.data.tags
    commit = tags["mlflow.source.git.commit"]
    # the checkout's commit when the run started (an ancestor of HEAD if someone committed since)
    assert len(commit) == 40 and subprocess.run(["git", "-C", str(REPO), "merge-base", "--is-ancestor", commit, "HEAD"],
                                                capture_output=True).returncode == 0
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"].startswith("prefect flow learn-tasks")
    assert tags["conure.code_version"] == code_version() and tags["conure.torch_version"] == md.version("torch")
    assert tags["mlflow.user"]
    stages = _runs(client, "e2e", "tags.`conure.stage` = 'train'")
    assert stages and {r.data.tags["conure.device"] for r in stages} == {"cpu"}


def test_every_task_run_keeps_its_passed_validation(learned, client):
    head = json.loads((HOME / "lineages" / "e2e" / "HEAD.json").read_text())
    rows = {t["name"]: t["rows"] for t in head["tasks"]}
    task_runs = {r.info.run_name: r for r in _runs(client, "e2e", "tags.`conure.lineage` = 'e2e'")
                 if r.data.tags.get("conure.task") and "conure.stage" not in r.data.tags}
    for name in TASKS:
        summary = json.load(open(client.download_artifacts(task_runs[name].info.run_id, "validation/summary.json")))
        assert summary["ok"] is True and summary["task"] == name and summary["rows"] == rows[name]


def _copy_task(src: Path, dest: Path, name: str, break_it: bool = False) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    dest.mkdir(parents=True, exist_ok=True)
    (dest / "task.yaml").write_text((src / "task.yaml").read_text().replace(f"name: {src.name}", f"name: {name}"))
    table = pq.read_table(src / "data.parquet")
    if break_it:  # one empty user id: the contract refuses the table
        users = table["user_id"].to_pylist()
        users[3] = None
        table = table.set_column(table.schema.get_field_index("user_id"), "user_id", pa.array(users))
    pq.write_table(table, dest / "data.parquet")
    return dest


@pytest.fixture(scope="module")
def fixed(learned, task_dirs, preset_file, tmp_path_factory) -> dict:
    """Lineage 'fixed': clicks (cache hits from e2e), then 'liked_fix' after a failed first try, then 'gender_fix'."""
    from data_contracts.errors import ContractError
    from flows.learn import learn_task, learn_tasks

    root = tmp_path_factory.mktemp("fixed")
    by_name = {d.name: d for d in task_dirs}
    broken = _copy_task(by_name["liked"], root / "broken" / "liked_fix", "liked_fix", break_it=True)
    learn_task(task_dir=str(by_name["clicks"]), lineage="fixed", preset=preset_file)
    with pytest.raises(ContractError, match="user_id"):
        learn_task(task_dir=str(broken), lineage="fixed")
    liked = _copy_task(by_name["liked"], root / "liked_fix", "liked_fix")
    gender = _copy_task(by_name["gender"], root / "gender_fix", "gender_fix")
    return learn_tasks([str(liked), str(gender)], lineage="fixed")


def test_a_fixed_folder_gets_no_stale_failure_report(fixed, client):
    assert fixed["tasks"] == ["clicks", "liked_fix", "gender_fix"]
    assert any((HOME / "prepared" / "liked_fix" / "reports").iterdir())  # the failed try's GX report is on disk
    failed = _runs(client, "fixed", "attributes.status = 'FAILED'")
    assert [a.path for a in client.list_artifacts(failed[0].info.run_id)] == ["gx_report", "validation"]
    [task_run] = [r for r in _runs(client, "fixed", "tags.`conure.task` = 'liked_fix'")
                  if "conure.stage" not in r.data.tags and r.info.status == "FINISHED"]
    paths = [a.path for a in client.list_artifacts(task_run.info.run_id)]
    assert "gx_report" not in paths and "validation" in paths
    summary = json.load(open(client.download_artifacts(task_run.info.run_id, "validation/summary.json")))
    assert summary["ok"] is True and summary["task"] == "liked_fix"


def test_parallel_backfills_compute_a_shared_step_once(fixed, client):
    from flows.backfill import backfill

    orders = ["clicks,gender_fix", "clicks,gender_fix,liked_fix"]
    reports = backfill(lineage="fixed", orders=orders, from_prefix=1, parallel=2)
    # gender_fix after clicks is new to both orderings (lineage 'fixed' learned it after liked_fix):
    # computed by one thread while the other waits on its cache key, then reads the result
    states = [r["run"]["states"] for r in reports]
    total = {k: sum(s.get(k, 0) for s in states) for k in ("Completed", "Cached")}
    # per ordering: clicks = 4 cached stages + its own register; gender_fix = 4 stages + register;
    # the second ordering adds liked_fix (4 stages + register). Computing gender_fix twice: 17 / 8.
    assert total == {"Completed": 13, "Cached": 12}, states
    assert reports[0]["matrix"][1][1] == reports[1]["matrix"][1][1]  # the same gender_fix state

    # both backfills sit in the source's experiment, tagged to compare in one runs table
    flows = {r.data.tags["conure.order"]: r for r in _runs(client, "fixed", "tags.`conure.flow` = 'backfill'")}
    assert set(flows) == set(orders)
    assert all(r.data.tags["conure.backfill_of"] == "fixed" and r.data.tags["conure.strategy"] == "conure"
               for r in flows.values())
    stage = _runs(client, "fixed", "tags.`conure.lineage` = 'fixed--conure--clicks-gender_fix-liked_fix' "
                                   "and tags.`conure.stage` = 'train'")
    assert stage and all(r.data.tags["conure.order"] == orders[1] for r in stage)
    assert client.get_experiment_by_name("fixed--conure--clicks-gender_fix") is None
    versions = client.search_model_versions("name='conure-fixed--conure--clicks-gender_fix'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    shutil.rmtree(HOME / "prepared" / "liked_fix" / "reports", ignore_errors=True)


def test_prefect_runs_have_readable_names_and_artifacts(learned):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterName,
                                                TaskRunFilter, TaskRunFilterName)

    names = {f"e2e/{t}/{s}" for t in TASKS for s in ("ingest", "train", "prune", "retrain", "evaluate", "register")}

    with get_client(sync_client=True) as c:
        runs = c.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["e2e <- clicks, liked, gender"])))
        assert runs and all(r.state.is_completed() and "lineage:e2e" in r.tags for r in runs)
        task_runs = c.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=sorted(names))))
        keys = ["e2e-clicks-validation", "e2e-gender-mlflow-run", "e2e-model-version", "e2e-accuracy-matrix"]
        found = {a.key: a for a in c.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))}
    # the flow runs carry the lineage tag; their task runs do not (each tag is a concurrency-slot
    # request to Prefect's server, tasks/artifacts.py) and are found through their flow run
    assert {t.name for t in task_runs} == names and {t.flow_run_id for t in task_runs} <= {r.id for r in runs}
    assert not any("lineage:e2e" in t.tags for t in task_runs)
    assert set(found) == set(keys)
    assert "Validation passed: `clicks` (sequence)" in found["e2e-clicks-validation"].data
    # Prefect stores a link artifact as markdown: [text](url)
    assert "](http://127.0.0.1:5000/#/experiments/" in found["e2e-gender-mlflow-run"].data
    assert "?workflowType=machine_learning)" in found["e2e-gender-mlflow-run"].data  # the model-training view
    assert "conure-e2e version" in found["e2e-model-version"].data
    rows = json.loads(found["e2e-accuracy-matrix"].data)
    assert [r["after"] for r in rows] == list(TASKS) and rows[2]["gender (accuracy)"] == round(learned["matrix"][2][2], 4)


def test_heatmap_colours_each_column_on_its_own_metric():
    """MRR near 0.03 and accuracy near 0.75 side by side: each on 0 .. its metric's highest value."""
    from tasks.tracking import scaled_by_metric

    grid, scaled = scaled_by_metric(["mrr@5", "mrr@5", "accuracy"],
                                    [[0.04], [0.04, 0.01], [0.04, 0.01, 0.75]])
    assert scaled[2].tolist() == [1.0, 0.25, 1.0] and grid[2, 2] == 0.75
    assert [bool(v) for v in (scaled[0] != scaled[0])] == [False, True, True]  # not learned yet: blank


def test_mlflow_links_follow_conure_mlflow_ui(monkeypatch):
    from tasks.tracking import ui_base

    monkeypatch.setenv("CONURE_MLFLOW_UI", "http://mlflow.internal:8080/")
    assert ui_base() == "http://mlflow.internal:8080"
