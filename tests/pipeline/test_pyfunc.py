"""Registered versions are MLflow pyfunc models that answer like `conure predict` (same code)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.pipeline.conftest import HOME, TASKS
from tests.pipeline.processes import free_port, stop, wait_http

USERS = ["7", "42", "300"]
REPO = Path(__file__).resolve().parents[2]


def same_answer(model: dict, cli: dict) -> bool:
    """Same items / label in the same order; scores equal up to float summation order (the model
    scores a batch of users, the CLI one user: matmul sums differ in the last bits)."""
    if set(model) != set(cli) or {k: v for k, v in model.items() if k not in ("scores", "probabilities")} != \
            {k: v for k, v in cli.items() if k not in ("scores", "probabilities")}:
        return False
    if "scores" in cli:
        return model["scores"] == pytest.approx(cli["scores"], abs=1e-5)
    return list(model["probabilities"]) == list(cli["probabilities"]) and \
        list(model["probabilities"].values()) == pytest.approx(list(cli["probabilities"].values()), abs=1e-5)


def cli_predict(task: str, user: str, k: int) -> dict:
    from typer.testing import CliRunner

    from conure_cli.main import app

    res = CliRunner().invoke(app, ["predict", "--lineage", "e2e", "--task", task, "--user", user, "-k", str(k), "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def cli_history(user: str) -> list[str]:
    """The user's stored history (item ids, oldest first) of lineage e2e."""
    from tasks.serving import Predictor
    from tasks.store import LineageStore

    store = LineageStore()
    head = store.require_head("e2e")
    return Predictor(store.state_path(head.state_digest), store.histories_abs(head)).history_of(user)


def test_head_version_answers_histories_in_the_items_column(head_model):
    import pandas as pd

    rows = pd.DataFrame([{"items": cli_history(u), "task": t} for t in TASKS for u in USERS])
    by_items = head_model.predict(rows, params={"k": 5})
    by_user = head_model.predict(pd.DataFrame([{"user": u, "task": t} for t in TASKS for u in USERS]), params={"k": 5})
    assert [{k: v for k, v in a.items() if k != "unknown_items"} for a in by_items] == \
        [{k: v for k, v in a.items() if k != "user"} for a in by_user]
    [empty] = head_model.predict(pd.DataFrame([{"items": [], "task": "liked"}]))
    assert empty["error"].startswith("the history has no item task 'liked' knows (0 item id(s)")


@pytest.fixture(scope="module")
def head_model(learned):
    import mlflow

    return mlflow.pyfunc.load_model("models:/conure-e2e@head")


def test_head_version_answers_every_task_as_conure_predict(head_model):
    import pandas as pd

    rows = pd.DataFrame([{"user": u, "task": t} for t in TASKS for u in USERS])
    answers = head_model.predict(rows, params={"k": 5})
    assert len(answers) == len(rows)
    for (_, row), answer in zip(rows.iterrows(), answers):
        cli = cli_predict(row["task"], row["user"], 5)
        assert same_answer(answer, cli), (answer, cli)
    gender = [a for a in answers if a["task"] == "gender"]
    assert all(a["label"] in ("M", "F") and set(a["probabilities"]) == {"M", "F"} for a in gender)
    assert all(len(a["items"]) == 5 for a in answers if a["task"] != "gender")


def test_version_for_task_n_answers_tasks_1_to_n_only(learned, head_model):
    import mlflow
    import pandas as pd

    first = mlflow.pyfunc.load_model("models:/conure-e2e@tasks-1")
    rows = pd.DataFrame([{"user": "7", "task": "clicks"}, {"user": "7", "task": "liked"}])
    clicks, liked = first.predict(rows, params={"k": 5})
    # T1 answers with the weights it owned: the same as the head version's (and conure predict's)
    assert clicks == head_model.predict(rows.iloc[:1], params={"k": 5})[0] == cli_predict("clicks", "7", 5)
    assert liked["task"] == "liked" and "items" not in liked
    assert "task 'liked' is not learned by model conure-e2e after 1 task(s); it answers clicks" in liked["error"]


def test_unknown_user_is_a_clear_error_in_the_answer(head_model):
    import pandas as pd

    [answer] = head_model.predict(pd.DataFrame([{"user": "no-such-user", "task": "liked"}]))
    assert set(answer) == {"user", "task", "error"}
    assert answer["error"].startswith("user 'no-such-user' is not in the stored histories of model conure-e2e after 3 task(s)")
    assert "Traceback" not in answer["error"]


def test_mlflow_models_serve_answers_one_request(learned, tmp_path):
    port = free_port()
    # as in an activated virtualenv: the scoring server is started as `uvicorn` from PATH
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{HOME / 'mlflow.db'}",
               PATH=f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}")
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/conure-e2e@head",
                             "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            cwd=tmp_path, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/ping", proc, log)
        history = cli_history("42")
        # a request mixing both kinds of rows sends "items": null on user rows (MLflow casts each column whole)
        body = json.dumps({"dataframe_records": [{"user": "42", "task": "liked", "items": None},
                                                 {"user": "42", "task": "nope", "items": None},
                                                 {"items": history + ["no-such-item"], "task": "liked"}],
                           "params": {"k": 3}}).encode()
        request = urllib.request.Request(f"{base}/invocations", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as r:
            liked, nope, from_items = json.loads(r.read())["predictions"]
        assert liked == cli_predict("liked", "42", 3)
        assert nope["error"].startswith("task 'nope' is not learned by model conure-e2e after 3 task(s)")
        # a service's own history of the user: the same answer, the unknown id dropped and counted
        assert from_items == {"unknown_items": 1, **{k: v for k, v in liked.items() if k != "user"}}
    finally:
        stop(proc)


def test_bad_k_is_an_error_per_row_lined_up_with_the_input(head_model):
    import pandas as pd

    rows = pd.DataFrame([{"user": "7", "task": "liked"}, {"user": "42", "task": "gender"}])
    assert head_model.predict(rows, params={"k": 0}) == [
        {"user": "7", "task": "liked", "error": "param k=0 must be at least 1."},
        {"user": "42", "task": "gender", "error": "param k=0 must be at least 1."}]


LOAD_AND_PREDICT = """
import json, os, sys
before = dict(os.environ)
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model("models:/conure-e2e@head")
answer = model.predict(pd.DataFrame([{"user": "7", "task": "gender"}]))
changed = sorted(k for k in set(os.environ) | set(before) if os.environ.get(k) != before.get(k))
print(json.dumps({"changed": changed, "label": answer[0].get("label"),
                  "modules": sorted({m.split(".")[0] for m in sys.modules} & {"prefect", "great_expectations"})}))
"""


def test_loading_and_serving_a_model_leaves_the_callers_process_as_it_was(learned, tmp_path):
    """In a fresh process: only MLflow's own variables change, no folder appears in the working
    directory, and neither Prefect nor Great Expectations is imported on the serving path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONURE_", "PREFECT_", "MLFLOW_", "GX_"))}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{HOME / 'mlflow.db'}", PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", LOAD_AND_PREDICT], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["label"] in ("M", "F")
    assert [k for k in result["changed"] if not k.lstrip("_").startswith("MLFLOW_")] == []
    assert result["modules"] == []
    assert list(tmp_path.iterdir()) == []
