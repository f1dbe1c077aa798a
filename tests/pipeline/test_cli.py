"""The conure command: errors are one line without a traceback and a non-zero exit."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def conure(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, CONURE_HOME=str(home), MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}")
    return subprocess.run([sys.executable, "-m", "conure_cli.main", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, words", [
    (["report", "--lineage", "nowhere"], "lineage 'nowhere' does not exist"),
    (["predict", "--lineage", "nowhere", "--task", "clicks", "--user", "1"], "lineage 'nowhere' does not exist"),
    (["report", "--lineage", "../etc"], "is not allowed"),
    (["validate", "/no/such/folder"], "task folder /no/such/folder does not exist"),
])
def test_errors_are_one_line(tmp_path, args, words):
    res = conure(*args, home=tmp_path)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr + res.stdout
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("conure: error: ") and words in lines[0], res.stderr


def test_validate_reports_a_bad_table(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    task = tmp_path / "bad"
    task.mkdir()
    (task / "task.yaml").write_text("name: bad\nkind: sequence\n")
    pq.write_table(pa.table({"user": [1, 2], "items": [[1, 2, 3], [2, 3, 4]]}), task / "data.parquet")
    res = conure("validate", str(task), home=tmp_path)
    assert res.returncode == 1 and "Traceback" not in res.stderr + res.stdout
    assert "user_id" in res.stdout + res.stderr


def test_help_everywhere(tmp_path):
    for cmd in ("run", "learn", "validate", "backfill", "report", "predict", "ui", "serve"):
        res = conure(cmd, "--help", home=tmp_path)
        assert res.returncode == 0 and "Usage" in res.stdout, cmd
