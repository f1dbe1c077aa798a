"""A process killed while the MLflow store is being created or migrated never bricks the home.

Both kills are deterministic: ``CONURE_CRASH_AT=mlflow-migrate:N`` (the N-th SQL statement of our own
store creation), and a SQLAlchemy hook in the child standing in for an older version that let MLflow
migrate a store holding runs in place.
"""
from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# a tracking command as the pipeline makes it: open the lineage's store, record a run, print its id
LOG_RUN = """
import sys
from tasks.settings import configure_process
from tasks.tracking import Tracker
configure_process()  # as `conure` does: the crash harness (CONURE_CRASH_AT)
t = Tracker("lin")
run = t.start_run("second"); t.end_run(run)
print(run)
"""

# an older version's store: migrated to an old revision, holding one run, then upgraded in place by
# MLflow itself and killed at its N-th SQL statement
OLD_STORE = """
import os, signal, sqlite3, sys
import sqlalchemy
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy.pool import NullPool
from mlflow.store.db.utils import _get_alembic_config, _upgrade_db
from mlflow.store.tracking.dbmodels.initial_models import Base

db, kill_at = sys.argv[1], int(sys.argv[2])
engine = sqlalchemy.create_engine(f"sqlite:///{db}", poolclass=NullPool)
old = list(ScriptDirectory.from_config(_get_alembic_config("")).walk_revisions())[20].revision
Base.metadata.create_all(engine)
config = _get_alembic_config(str(engine.url))
with engine.begin() as connection:
    config.attributes["connection"] = connection
    command.upgrade(config, old)
con = sqlite3.connect(db)
con.execute("INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage, creation_time, "
            "last_update_time) VALUES (1, 'lin', '/tmp/conure-old', 'active', 1, 1)")
con.execute("INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, "
            "start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id) VALUES "
            "('oldrun', 'earlier', 'LOCAL', '', '', 'u', 'FINISHED', 1, 2, '', 'active', '/tmp/conure-old/r', 1)")
con.execute("INSERT INTO params (key, value, run_uuid) VALUES ('task', 'clicks', 'oldrun')")
con.commit()
con.close()
count = [0]

@sqlalchemy.event.listens_for(engine, "before_cursor_execute")
def _kill(*_args):
    count[0] += 1
    if count[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

_upgrade_db(engine)
"""


def _run(home: Path, code: str, *args: str, crash_at: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, CONURE_HOME=str(home), MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}",
               PREFECT_HOME=str(home / "prefect"), PREFECT_LOCAL_STORAGE_PATH=str(home / "prefect" / "results"))
    env.pop("CONURE_CRASH_AT", None)
    if crash_at:
        env["CONURE_CRASH_AT"] = crash_at
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600, start_new_session=True)


def _client(home: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")


def test_kill_during_store_creation_then_next_command_works(tmp_path):
    home = tmp_path / "home"
    killed = _run(home, LOG_RUN, crash_at="mlflow-migrate:300")
    assert killed.returncode == -signal.SIGKILL
    assert not (home / "mlflow.db").exists()  # nothing half-made at the store's path
    assert [p.name for p in home.glob("mlflow.db.tmp-*")]  # only the killed creator's temp file

    first = _run(home, LOG_RUN)
    assert first.returncode == 0, first.stderr[-2000:]
    assert not list(home.glob("mlflow.db.*")) and (home / "mlflow.db").is_file()
    second = _run(home, LOG_RUN)  # and the store keeps what earlier commands logged
    assert second.returncode == 0, second.stderr[-2000:]
    client = _client(home)
    runs = client.search_runs([client.get_experiment_by_name("lin").experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted([first.stdout.split()[-1], second.stdout.split()[-1]])
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_half_migrated_store_with_runs_is_repaired_keeping_them(tmp_path):
    from tasks.stores import head_revision, inspect

    home = tmp_path / "home"
    home.mkdir()
    db = home / "mlflow.db"
    old = _run(home, OLD_STORE, str(db), "60")
    assert old.returncode == -signal.SIGKILL, old.stderr[-2000:]
    left = inspect(db)
    assert left["revision"] != head_revision() and left["rows"]["runs"] == 1
    plain = tmp_path / "plain.db"
    shutil.copy(db, plain)
    with pytest.raises(Exception, match="already exists"):  # what MLflow alone makes of it: bricked
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=f"sqlite:///{plain}").search_experiments()

    fixed = _run(home, LOG_RUN)
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert "half-migrated" in fixed.stderr and "keeping its 1 runs" in fixed.stderr
    assert inspect(db)["revision"] == head_revision()
    client = _client(home)
    earlier = client.get_run("oldrun")
    assert earlier.info.run_name == "earlier" and earlier.data.params == {"task": "clicks"}
    runs = client.search_runs([client.get_experiment_by_name("lin").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["earlier", "second"]
    backups = list(home.glob("mlflow.db.bak-*"))
    assert len(backups) == 1 and sqlite3.connect(backups[0]).execute("SELECT COUNT(*) FROM runs").fetchone() == (1,)
    assert not list(home.glob("mlflow.db.repair-*")) and not list(home.glob("mlflow.db.ref-*"))
