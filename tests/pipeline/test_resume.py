"""A flow killed with SIGKILL mid-training resumes at that step and ends in the uninterrupted state."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.pipeline.conftest import THREADS

REPO = Path(__file__).resolve().parents[2]


def _env(home: Path) -> dict:
    env = dict(os.environ, CONURE_HOME=str(home), PREFECT_HOME=str(home / "prefect"),
               MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}", PYTHONUNBUFFERED="1",
               CONURE_TEST_THREADS=str(THREADS), OMP_NUM_THREADS=str(THREADS))
    return env


def test_kill_mid_training_then_resume(learned, task_dirs, preset_file, tmp_path):
    home = tmp_path / "home"
    cmd = [sys.executable, "-m", "tests.pipeline.child_learn", preset_file, *map(str, task_dirs)]
    child = subprocess.Popen(cmd, cwd=REPO, env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, start_new_session=True)
    killed_at = None
    deadline = time.time() + 240
    try:
        for line in child.stdout:
            if line.startswith("EVENT "):
                e = json.loads(line[6:])
                # the second task's train stage has finished an epoch and goes on: kill it there
                if e.get("event") == "epoch" and e.get("task") == "liked" and e.get("stage") == "train" \
                        and e.get("epoch") == 1:
                    os.killpg(child.pid, signal.SIGKILL)
                    killed_at = e
                    break
            assert time.time() < deadline, "child never reached liked/train epoch 1"
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(30)
    assert killed_at is not None and child.returncode == -signal.SIGKILL
    head = json.loads((home / "lineages" / "e2e" / "HEAD.json").read_text())
    assert [t["name"] for t in head["tasks"]] == ["clicks"]  # liked never reached HEAD

    done = subprocess.run(cmd, cwd=REPO, env=_env(home), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(next(l for l in done.stdout.splitlines() if l.startswith("REPORT "))[7:])
    assert report["state_digest"] == learned["state_digest"]
    assert report["matrix"] == learned["matrix"]
    states = report["run"]["states"]
    # clicks (ingest + 3 stages + evaluate + register) and liked's ingest were finished: cache hits
    assert states.get("Cached", 0) >= 7 and states.get("Completed", 0) >= 5

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("e2e")
    statuses = [r.info.status for r in client.search_runs([exp.experiment_id], max_results=200)]
    assert "RUNNING" not in statuses and "KILLED" in statuses  # the killed run was closed on resume
