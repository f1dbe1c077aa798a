"""End to end: a real Prefect flow (embedded server) and a real MLflow SQLite store learn three real tasks."""
from __future__ import annotations

import json

import pytest

from conure_core.wide import SCALE, TOPK
from tests.pipeline.conftest import HOME, TASKS


@pytest.fixture(scope="module")
def client():
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{HOME / 'mlflow.db'}")


@pytest.fixture(scope="module")
def runs(learned, client):
    exp = client.get_experiment_by_name("e2e")
    assert exp is not None
    all_runs = client.search_runs([exp.experiment_id], max_results=500)
    return {r.info.run_id: r for r in all_runs}


def test_report_is_a_lower_triangular_matrix(learned):
    assert learned["tasks"] == list(TASKS)
    assert learned["metric"] == {"clicks": "mrr@5", "liked": "mrr@5", "gender": "accuracy"}
    m = learned["matrix"]
    assert [[v is None for v in row] for row in m] == [[False, True, True], [False, False, True], [False, False, False]]
    # Conure never forgets: each task's metric is identical after every later task.
    for j in range(3):
        assert len({m[i][j] for i in range(j, 3)}) == 1
    assert 0.5 < m[2][2] <= 1.0  # gender accuracy of a trained head on real data
    free = learned["free_capacity"]
    assert free[0] > free[1] > free[2] > 0
    assert len(learned["state_digest"]) == 64
    assert learned["run"]["states"] == {"Completed": 3 * 6}  # ingest, train, prune, retrain, evaluate, register


def test_runs_are_nested_flow_task_stage(learned, runs):
    by_parent: dict[str, list] = {}
    for r in runs.values():
        by_parent.setdefault(r.data.tags.get("mlflow.parentRunId"), []).append(r)
    flows = [r for r in by_parent[None] if r.data.tags.get("conure.flow") == "learn-tasks"]
    assert len(flows) >= 1
    flow = flows[-1] if len(flows) == 1 else min(flows, key=lambda r: r.info.start_time)
    task_runs = by_parent[flow.info.run_id]
    assert sorted(r.info.run_name for r in task_runs) == sorted(TASKS)
    for tr in task_runs:
        stages = sorted(r.data.tags["conure.stage"] for r in by_parent[tr.info.run_id])
        assert stages == ["evaluate", "prune", "retrain", "train"]
        assert tr.info.status == "FINISHED"
    assert flow.info.status == "FINISHED"
    assert flow.data.params["strategy"] == "conure"
    assert json.loads(flow.data.params["config.model.dilations"]) == [1, 2]


def test_metrics_per_step(learned, runs, client):
    flow = next(r for r in runs.values() if r.data.tags.get("conure.flow") == "learn-tasks"
                and "mlflow.parentRunId" not in r.data.tags)
    hist = client.get_metric_history(flow.info.run_id, "test/clicks/mrr_at_5")
    assert sorted(m.step for m in hist) == [1, 2, 3]
    assert {m.value for m in hist} == {learned["matrix"][0][0]}
    gender = client.get_metric_history(flow.info.run_id, "test/gender/accuracy")
    assert [m.step for m in gender] == [3] and gender[0].value == pytest.approx(learned["matrix"][2][2])
    free = {m.step: m.value for m in client.get_metric_history(flow.info.run_id, "free_capacity/total")}
    assert free == {i + 1: pytest.approx(v) for i, v in enumerate(learned["free_capacity"])}
    layers = [k for k in flow.data.metrics if k.startswith("free_capacity/") and k != "free_capacity/total"]
    assert layers, "free capacity per layer"
    train = next(r for r in runs.values() if r.data.tags.get("conure.stage") == "train"
                 and r.data.tags.get("conure.task") == "liked")
    losses = client.get_metric_history(train.info.run_id, "train_loss")
    assert sorted(m.step for m in losses) == [1, 2] and all(m.value > 0 for m in losses)
    # T1's wide part: the fit and the fusion scale chosen on validation, on each of its training stages
    for stage in ("train", "retrain"):
        t1 = next(r for r in runs.values() if r.data.tags.get("conure.stage") == stage
                  and r.data.tags.get("conure.task") == "clicks")
        wide = {k: v for k, v in t1.data.metrics.items() if k.startswith("wide/")}
        assert set(wide) == {"wide/k", "wide/shrink", "wide/decay", "wide/valid", "wide/scale", "wide/valid_fused",
                             "wide/valid_deep", *(f"wide/valid_k{k}" for k in TOPK)}, stage
        assert wide["wide/valid"] == wide[f"wide/valid_k{int(wide['wide/k'])}"]
        assert wide["wide/valid_fused"] >= wide["wide/valid_deep"] and wide["wide/scale"] in SCALE


def test_artifacts_inputs_and_model_versions(learned, runs, client):
    import io

    import numpy as np

    task_runs = {r.info.run_name: r for r in runs.values() if r.data.tags.get("conure.task")
                 and "conure.stage" not in r.data.tags}
    gender = task_runs["gender"]
    files = {f.path for f in client.list_artifacts(gender.info.run_id, "masks")}
    files |= {f.path for f in client.list_artifacts(gender.info.run_id, "matrix")}
    assert {"masks/owner_maps.npz", "masks/mask_summary.json", "matrix/accuracy_matrix.png",
            "matrix/accuracy_matrix.csv"} <= files
    local = client.download_artifacts(gender.info.run_id, "matrix/accuracy_matrix.png")
    assert open(local, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    npz = np.load(io.BytesIO(open(client.download_artifacts(gender.info.run_id, "masks/owner_maps.npz"), "rb").read()))
    owners = np.concatenate([npz[k].ravel() for k in npz.files])
    assert set(np.unique(owners)) <= {0, 1, 2, 3} and {1, 2, 3} <= set(np.unique(owners))
    assert float((owners == 0).mean()) == pytest.approx(learned["free_capacity"][2], abs=1e-6)
    head = json.loads((HOME / "lineages" / "e2e" / "HEAD.json").read_text())
    for t in head["tasks"]:
        inputs = task_runs[t["name"]].inputs.dataset_inputs
        assert [(d.dataset.name, d.dataset.digest) for d in inputs] == [(t["name"], t["prepared_digest"][:36])]
    versions = sorted(client.search_model_versions("name='conure-e2e'"), key=lambda v: int(v.version))
    assert [v.tags["num_tasks"] for v in versions] == ["1", "2", "3"]
    assert versions[-1].tags["state_digest"] == learned["state_digest"]
    assert client.get_model_version_by_alias("conure-e2e", "head").version == versions[-1].version
    assert client.get_model_version_by_alias("conure-e2e", "tasks-2").version == versions[1].version

    # the review (issue 17): owners by task name, one chart of every task's metric against tasks learned,
    # datasets with a schema, registry versions made from the logged models (one per task, named for it)
    summary = json.loads(open(client.download_artifacts(gender.info.run_id, "masks/mask_summary.json")).read())
    assert set().union(*(s["owned"] for s in summary.values())) == set(TASKS)
    assert "matrix/test_metric_by_tasks_learned.png" in files
    schema = json.loads(task_runs["clicks"].inputs.dataset_inputs[0].dataset.schema)["mlflow_colspec"]
    assert [c["name"] for c in schema] == ["user_id", "tokens", "split"]
    experiment = client.get_experiment_by_name("e2e")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    logged = {m.name: m for m in client.search_logged_models(experiment_ids=[experiment.experiment_id])}
    assert {f"e2e-{t}" for t in TASKS} <= set(logged)
    for v, task in zip(versions, TASKS):
        model = logged[f"e2e-{task}"]
        assert v.source == f"models:/{model.model_id}" and v.run_id == model.source_run_id
        assert {"name": "conure-e2e", "version": v.version} in json.loads(model.tags["mlflow.modelVersions"])
    gender_model = client.get_logged_model(logged["e2e-gender"].model_id)
    linked = {m.key: (m.value, m.dataset_name) for m in gender_model.metrics}
    assert linked["test/gender/accuracy"] == (pytest.approx(learned["matrix"][2][2]), "gender")
    assert linked["test/clicks/mrr_at_5"][1] == "clicks"


def test_second_run_is_all_cache_hits(learned, task_dirs, preset_file, client):
    from flows.learn import learn_tasks

    experiment = client.get_experiment_by_name("e2e").experiment_id
    before = {r.info.run_id for r in client.search_runs([experiment], max_results=500)}
    again = learn_tasks([str(d) for d in task_dirs], lineage="e2e", preset=preset_file)
    assert again["run"]["states"] == {"Cached": 18}
    assert again["run"]["compute_s"] == 0.0
    assert again["state_digest"] == learned["state_digest"] and again["matrix"] == learned["matrix"]
    # it learned nothing, so it leaves no MLflow run (the Prefect flow run records it) and no open-run marker
    assert {r.info.run_id for r in client.search_runs([experiment], max_results=500)} == before
    assert not (HOME / "lineages" / "e2e" / "mlflow_run.open").exists()


def test_predict_answers_under_every_task(learned):
    from typer.testing import CliRunner

    from conure_cli.main import app

    runner = CliRunner()
    for task in TASKS:
        res = runner.invoke(app, ["predict", "--lineage", "e2e", "--task", task, "--user", "7", "-k", "5", "--json"])
        assert res.exit_code == 0, res.output
        answer = json.loads(res.stdout)
        assert answer["user"] == "7" and answer["task"] == task
        if task == "gender":
            assert answer["label"] in ("M", "F")
            assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        else:
            assert len(answer["items"]) == 5 and answer["scores"] == sorted(answer["scores"], reverse=True)


def test_report_json_keys(learned):
    from typer.testing import CliRunner

    from conure_cli.main import app

    res = CliRunner().invoke(app, ["report", "--lineage", "e2e", "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    for key in ("lineage", "strategy", "tasks", "metric", "matrix", "free_capacity", "state_digest"):
        assert rep[key] == learned[key]


def test_landing_watch_learns_each_folder_once(learned, task_dirs, preset_file, tmp_path):
    import shutil

    from data_contracts.landing import seal
    from flows.landing import watch_landing

    landing = tmp_path / "landing"
    for d in task_dirs[1:] + task_dirs[:1]:  # T1 lands last, yet goes first; then by arrival (marker time)
        shutil.copytree(d, landing / d.name)
        seal(landing / d.name)  # the producer's completion marker (files, sizes, SHA-256), written last
    first = watch_landing(landing=str(landing), lineage="watched", preset=preset_file)
    assert [x["task"] for x in first["learned"]] == list(TASKS) and not first["failed"]
    second = watch_landing(landing=str(landing), lineage="watched", preset=preset_file)
    assert second["learned"] == [] and second["failed"] == {}
    head = json.loads((HOME / "lineages" / "watched" / "HEAD.json").read_text())
    assert head["tasks"][-1]["state_digest"] == learned["state_digest"]  # same data, config, code: same state


def test_backfill_other_order_from_prefix(learned):
    from flows.backfill import backfill

    [rep] = backfill(lineage="e2e", orders=["clicks,gender,liked"], from_prefix=1)
    assert rep["lineage"] == "e2e--conure--clicks-gender-liked"
    assert rep["tasks"] == ["clicks", "gender", "liked"]
    assert rep["matrix"][0][0] == learned["matrix"][0][0]
    assert rep["parent"] == {"lineage": "e2e", "prefix": 1, "order": ["clicks", "gender", "liked"]}
    from tasks.reporting import lineage_report

    assert [b["lineage"] for b in lineage_report("e2e")["backfills"]] == [rep["lineage"]]


def test_backfill_unknown_strategy_is_one_clear_error(learned):
    from flows.backfill import backfill
    from tasks.errors import PipelineError

    with pytest.raises(PipelineError, match="strategy 'nope' is not available"):
        backfill(lineage="e2e", orders=["clicks,liked"], strategy="nope")


def test_backfill_baseline_strategy(learned):
    from flows.backfill import backfill
    from tasks.reporting import lineage_report

    [rep] = backfill(lineage="e2e", orders=["clicks,liked"], strategy="finesmax")
    assert rep["lineage"] == "e2e--finesmax--clicks-liked" and rep["strategy"] == "finesmax"
    m = rep["matrix"]
    assert m[0][1] is None and m[1][0] == m[0][0]  # FineSmax freezes the backbone after T1: T1 never moves
    assert 0 < m[1][1] < 1 and rep["state_digest"] == ""  # a baseline keeps no lineage state
    assert "e2e--finesmax--clicks-liked" in [b["lineage"] for b in lineage_report("e2e")["backfills"]]


def test_bad_data_stops_before_training_with_gx_report(learned, client, tmp_path):
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from data_contracts.errors import ContractError
    from flows.learn import learn_task

    bad = tmp_path / "bad_liked"
    bad.mkdir()
    (bad / "task.yaml").write_text("name: bad_liked\nkind: item\n")
    pq.write_table(pa.table({"user_id": [1, 2, 3, None], "label": [10, 20, 30, 40]}), bad / "data.parquet")
    head_before = (HOME / "lineages" / "e2e" / "HEAD.json").read_text()
    with pytest.raises(ContractError, match="user_id"):
        learn_task(task_dir=str(bad), lineage="e2e")
    assert (HOME / "lineages" / "e2e" / "HEAD.json").read_text() == head_before  # the lineage is untouched
    exp = client.get_experiment_by_name("e2e")
    failed = client.search_runs([exp.experiment_id], "attributes.status = 'FAILED'", max_results=10)
    flow_runs = [r for r in failed if r.data.tags.get("conure.flow") == "learn-task"]
    assert flow_runs and [a.path for a in client.list_artifacts(flow_runs[0].info.run_id)] == ["gx_report", "validation"]
    shutil.rmtree(bad)
