"""The conure command: errors are one line without a traceback, with the exit code of their kind."""
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


@pytest.mark.parametrize("args, words, code", [
    (["report", "--lineage", "nowhere"], "lineage 'nowhere' does not exist", 4),
    (["predict", "--lineage", "nowhere", "--task", "clicks", "--user", "1"], "lineage 'nowhere' does not exist", 4),
    (["report", "--lineage", "../etc"], "is not allowed", 4),
    (["validate", "/no/such/folder"], "task folder /no/such/folder does not exist", 3),
    (["validate", str(REPO), "--lineage", "nowhere"], "lineage 'nowhere' does not exist", 4),
    (["rollback", "--lineage", "nowhere", "--to", "1"], "lineage 'nowhere' does not exist", 4),
    (["land", str(REPO / "docs")], "is not a task folder (no task.yaml)", 3),
])
def test_errors_are_one_line(tmp_path, args, words, code):
    res = conure(*args, home=tmp_path)
    assert res.returncode == code, res.stderr
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
    assert res.returncode == 3 and "Traceback" not in res.stderr + res.stdout
    assert "user_id" in res.stdout + res.stderr


def test_help_everywhere(tmp_path):
    for cmd in ("run", "learn", "validate", "backfill", "report", "predict", "ui", "serve"):
        res = conure(cmd, "--help", home=tmp_path)
        assert res.returncode == 0 and "Usage" in res.stdout, cmd


def test_help_lists_exit_codes(tmp_path):
    res = conure("--help", home=tmp_path)
    text = " ".join(res.stdout.split())
    assert res.returncode == 0 and "Exit codes: 0 ok, 1 internal error, 2 usage, 3 bad input" in text, res.stdout
    assert conure("validate", home=tmp_path).returncode == 2  # a missing argument is a usage error


def test_exit_code_mapping():
    from conure_cli.exits import exit_code
    from conure_core.config import ConfigError
    from data_contracts.errors import ContractError
    from tasks.errors import PipelineError

    class LockTimeout(PipelineError):
        pass

    assert [exit_code(e) for e in (ContractError("x"), ConfigError("x"), LockTimeout("x"), KeyError("x"))] == [3, 4, 4, 1]


def test_land_copies_and_seals_a_folder_once(tmp_path):
    import json

    src = tmp_path / "src" / "liked"
    src.mkdir(parents=True)
    (src / "task.yaml").write_text("name: liked\nkind: item\n")
    (src / "data.csv").write_text("user_id,label\n1,5\n")
    home = tmp_path / "home"
    res = conure("land", str(src), home=home)
    assert res.returncode == 0, res.stderr
    landed = home / "landing" / "liked"
    assert res.stdout.strip() == f"landed {landed}: 2 file(s), 41 bytes, sealed by _SUCCESS"
    assert sorted(json.loads((landed / "_SUCCESS").read_text())["files"]) == ["data.csv", "task.yaml"]
    again = conure("land", str(src), home=home)
    assert again.returncode == 4 and f"{landed} already exists; pass --replace" in again.stderr
    assert conure("land", str(src), "--replace", home=home).returncode == 0
    assert [p.name for p in (home / "landing").iterdir()] == ["liked"]  # no staging folder left behind
