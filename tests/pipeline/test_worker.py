"""A real Prefect process worker runs the `learn-task-process` deployment of deployments/prefect.yaml
on the home the session's run already filled: T1 into a new lineage, every learning step a cache hit
(the same state), only the new lineage's register step computes, which starts the flow run's MLflow
run tagged as a deployment's.
The four process-pool entries are deployed as docs/deployments.md says (`--name '*-process'`).

The session's `learned` fixture runs the same flow `conure learn` runs, in this process. The worker
gets a clean environment: no Prefect result setting at all (and its own PREFECT_HOME), so sharing
the cache can only come from the settings declared on the tasks.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.pipeline.conftest import HOME
from tests.pipeline.processes import free_port, stop, wait_http

REPO = Path(__file__).resolve().parents[2]


def _api(url: str, path: str, body: dict | None = None) -> dict | list:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"},
                                 method="POST" if body is not None else "GET")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def test_process_worker_runs_learn_deployment_from_the_cache(learned, task_dirs, preset_file, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CONURE_"))}
    clean["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{clean.get('PATH', '')}"
    # no scheduler: the landing watch's schedule must not start runs the worker would pick up
    server_env = dict(clean, PREFECT_HOME=str(tmp_path / "server"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                      PREFECT_UI_ENABLED="false", PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false")
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=server_env, stdout=open(tmp_path / "server.log", "wb"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    env = dict(clean, PREFECT_API_URL=url, PREFECT_HOME=str(tmp_path / "worker-home"), CONURE_HOME=str(HOME),
               CONURE_REPO=str(REPO), MLFLOW_TRACKING_URI=f"sqlite:///{HOME / 'mlflow.db'}")
    try:
        wait_http(f"{url}/health", server, tmp_path / "server.log")
        _api(url, "/work_pools/", {"name": "conure-process", "type": "process"})
        deployed = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--prefect-file",
                                   "deployments/prefect.yaml", "--name", "*-process"],
                                  cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
        assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-2000:]
        deployments = {d["name"]: d for d in _api(url, "/deployments/filter", {})}
        assert sorted(deployments) == sorted(f"{f}-process" for f in ("landing-watch", "run-default", "learn-task",
                                                                      "backfill"))
        assert {d["work_pool_name"] for d in deployments.values()} == {"conure-process"}
        watch = deployments["landing-watch-process"]
        assert watch["global_concurrency_limit"]["limit"] == 1 and watch["schedules"][0]["schedule"]["interval"] == 300
        deployment = deployments["learn-task-process"]
        assert deployment["job_variables"]["env"]["CONURE_HOME"] == str(HOME)  # resolved at deploy time
        clicks = str(task_dirs[0])
        run = _api(url, f"/deployments/{deployment['id']}/create_flow_run",
                   {"parameters": {"task_dir": clicks, "lineage": "e2e-worker", "preset": str(preset_file)}})
        worker = subprocess.run([sys.executable, "-m", "prefect", "worker", "start", "--pool", "conure-process",
                                 "--type", "process", "--run-once", "--limit", "1"],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        flow_run = _api(url, f"/flow_runs/{run['id']}")
        assert flow_run["state"]["type"] == "COMPLETED", worker.stdout[-3000:] + worker.stderr[-3000:]
        assert flow_run["name"] == "e2e-worker <- clicks"
        task_runs = _api(url, "/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}})
        states = {t["name"]: t["state"]["name"] for t in task_runs}
        assert states == {**{f"e2e-worker/clicks/{s}": "Cached" for s in ("ingest", "train", "prune", "retrain",
                                                                           "evaluate")},
                          "e2e-worker/clicks/register": "Completed"}  # the register key names the lineage
        artifacts = _api(url, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}})
        assert {("e2e-worker-accuracy-matrix", "table"), ("e2e-worker-mlflow", "markdown")} <= \
            {(a["key"], a["type"]) for a in artifacts}  # the matrix and a link
    finally:
        stop(server)
    last = json.loads((HOME / "lineages" / "e2e-worker" / "last_run.json").read_text())
    assert last["flow"] == "learn-task" and last["states"] == {"Cached": 5, "Completed": 1}
    assert last["compute_s"] == 0.0 and not last["all_cached"]
    head = json.loads((HOME / "lineages" / "e2e" / "HEAD.json").read_text())
    assert head["tasks"][-1]["state_digest"] == learned["state_digest"]  # untouched
    worker_head = json.loads((HOME / "lineages" / "e2e-worker" / "HEAD.json").read_text())
    assert [t["state_digest"] for t in worker_head["tasks"]] == [head["tasks"][0]["state_digest"]]  # the same T1 state
    assert not (tmp_path / "worker-home" / "storage").exists()  # nothing went to Prefect's default storage

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{HOME / 'mlflow.db'}")
    exp = client.get_experiment_by_name("e2e-worker")
    [mlflow_run] = client.search_runs([exp.experiment_id], f"tags.`prefect.flow_run` = '{run['id']}'")
    assert mlflow_run.data.tags["mlflow.source.type"] == "JOB"
    assert mlflow_run.data.tags["prefect.deployment"] == "learn-task-process"
