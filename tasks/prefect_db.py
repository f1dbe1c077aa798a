"""The local Prefect server's database in a new home: a copy of a migrated, empty one.

Prefect creates a new SQLite database by running its whole migration history (~5 s of CPU, the
largest part of a new home's server start). The first server that creates one keeps a copy of the
migrated, still empty database per Prefect version in the user's cache
(``$XDG_CACHE_HOME/conure/prefect-<version>.db``, default ``~/.cache``); a new home's database then
starts as that copy, and the server's own start-up check finds it at Prefect's head revision.
Nothing here runs for a database Prefect is told to use elsewhere (``PREFECT_*_DATABASE_CONNECTION_URL``),
and a cache that cannot be written or read only means migrating as before.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path

DB_NAME = "prefect.db"  # Prefect's default database file in PREFECT_HOME
_URL_VARIABLES = ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL")


def template(environ: Mapping[str, str] | None = None) -> Path:
    """Where the migrated, empty database of the installed Prefect version is kept (for a process
    with ``environ``, default this one's)."""
    cache = Path((environ or os.environ).get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "conure" / f"prefect-{version('prefect')}.db"


def _own_database(prefect_home: Path) -> Path | None:
    """The default database file of ``prefect_home`` when the server will use it and it does not exist yet."""
    if any(os.environ.get(name) for name in _URL_VARIABLES):
        return None
    db = Path(prefect_home) / DB_NAME
    return None if db.exists() else db


def seed(prefect_home: Path) -> bool:
    """Start a new home's database as a copy of the template (before its server starts); True if copied."""
    db, source = _own_database(prefect_home), template()
    if db is None or not _migrated(source):
        return False
    tmp = db.with_name(f".{DB_NAME}.tmp-{os.getpid()}")
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, db)  # whole or not at all: a concurrent server start never sees half a file
    except OSError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _migrated(path: Path) -> bool:
    """The file is a database that records a migration revision (a template worth copying)."""
    if not path.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
            return con.execute("SELECT version_num FROM alembic_version").fetchone() is not None
    except sqlite3.Error:
        return False


def migrate_keeping_template(prefect_home: Path) -> None:
    """In the server process, before it serves: create a new home's database with Prefect's migrations
    and keep a copy of it, still empty, as the template of later homes."""
    db, target = _own_database(prefect_home), template()
    if db is None or target.exists():
        return
    import asyncio

    from prefect.server.database import provide_database_interface

    asyncio.run(provide_database_interface().create_db())
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    with contextlib.suppress(OSError, sqlite3.Error):
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(db)) as src, contextlib.closing(sqlite3.connect(tmp)) as dst:
            src.backup(dst)  # a consistent copy, whatever Prefect's journal mode left beside the file
        os.replace(tmp, target)
    tmp.unlink(missing_ok=True)
