"""``conure learn --nproc 2``: each training stage as a 2-rank torchrun job (gloo), through the real pipeline."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_learn_with_two_ranks(tmp_path, task_dirs, preset_file):
    home = tmp_path / "home"
    env = {**os.environ, "CONURE_HOME": str(home), "PREFECT_HOME": str(home / "prefect"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}"}
    cmd = [sys.executable, "-m", "conure_cli.main", "learn", str(task_dirs[0]), "--lineage", "ddp",
           "--preset", preset_file, "--nproc", "2", "--json"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["tasks"] == ["clicks"] and report["matrix"][0][0] > 0
    assert report["run"]["states"] == {"Completed": 6}
    # the state rank 0 stored is a complete, loadable lineage state
    from conure_core.checkpoint import load_state

    state = home / "states" / report["state_digest"] / "state.safetensors"
    assert load_state(state).tasks == ["clicks"]
