"""A new home's Prefect database starts as a copy of a migrated, empty one kept per Prefect version."""
from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from .test_cli import REPO

MIGRATE = "import sys; from pathlib import Path; from tasks.prefect_db import migrate_keeping_template as m; m(Path(sys.argv[1]))"


def _query(db: Path, sql: str):
    with contextlib.closing(sqlite3.connect(db)) as con:
        return con.execute(sql).fetchall()


def test_first_home_keeps_a_template_and_the_next_home_starts_from_it(tmp_path, monkeypatch):
    from tasks import prefect_db

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name in ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL"):
        monkeypatch.delenv(name, raising=False)
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    assert prefect_db.seed(first) is False and not (first / "prefect.db").exists()  # no template yet
    env = dict(os.environ, PREFECT_HOME=str(first), PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-c", MIGRATE, str(first)], env=env, check=True, timeout=300)
    template = prefect_db.template()
    head = _query(first / "prefect.db", "SELECT version_num FROM alembic_version")
    assert template.parent == tmp_path / "cache" / "conure" and template.name.startswith("prefect-3.")
    assert head and _query(template, "SELECT version_num FROM alembic_version") == head
    assert _query(template, "SELECT COUNT(*) FROM flow_run") == [(0,)]

    assert prefect_db.seed(second) is True
    assert _query(second / "prefect.db", "SELECT version_num FROM alembic_version") == head
    assert sorted(p.name for p in second.iterdir()) == ["prefect.db"]  # no temporary left beside it
    # an existing database is never replaced, and a database Prefect is told to use elsewhere is left alone
    (second / "prefect.db").write_bytes(b"mine")
    assert prefect_db.seed(second) is False and (second / "prefect.db").read_bytes() == b"mine"
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", "sqlite+aiosqlite:////elsewhere/prefect.db")
    third = tmp_path / "third"
    third.mkdir()
    assert prefect_db.seed(third) is False and not (third / "prefect.db").exists()


def test_a_broken_template_is_not_copied(tmp_path, monkeypatch):
    from tasks import prefect_db

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name in ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL"):
        monkeypatch.delenv(name, raising=False)
    prefect_db.template().parent.mkdir(parents=True)
    prefect_db.template().write_bytes(b"not a database")
    home = tmp_path / "home"
    home.mkdir()
    assert prefect_db.seed(home) is False and not (home / "prefect.db").exists()
