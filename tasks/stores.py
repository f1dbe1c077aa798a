"""The embedded MLflow tracking store (SQLite): created whole or not at all; repaired when half-migrated.

MLflow creates a missing SQLite store by running its ~70 schema migrations in place, and SQLite runs
their DDL outside any transaction: a process killed meanwhile leaves the tables of a migration whose
revision was never recorded, and every later open fails ("table trace_info already exists").
``ensure_tracking_store`` therefore:

- creates and migrates a new store at ``mlflow.db.tmp-<pid>`` and renames it into place only once its
  recorded revision is MLflow's head (a kill leaves the temp file alone; the next call removes it);
- repairs a store an older version left half-migrated (recorded revision not the head, or alembic's
  ``_alembic_tmp_*`` batch tables), on a copy: one holding no experiments, runs or models is rebuilt;
  otherwise the partial migration's leftovers (tables, indexes and columns the recorded revision does
  not have; tables only when empty) are dropped, the migrations finished, the run count checked, and
  the copy renamed into place with the original kept as ``mlflow.db.bak-<time>``.

All of it runs under ``.mlflow.db.lock`` (an OS lock: a killed holder releases it). The store is
kept in SQLite's WAL journal mode, as Prefect keeps its own: a commit costs one sync instead of
three or four (MLflow commits each call: ~8 ms instead of ~22 ms on a disk), and readers such as
`conure ui` never block the pipeline's writes; the migrations of a new store run on its temporary
file with no syncs at all (it is synced whole before the rename). Other stores
(``MLFLOW_TRACKING_URI`` = a server, Postgres, ...) are left to MLflow.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import threading
import time
from functools import lru_cache
from pathlib import Path

from tasks import crash
from conure_core.atomic import fsync_dir
from tasks.errors import PipelineError

_ok: set[Path] = set()
_guard = threading.Lock()
# tables whose rows are the user's history: a store with none of them is safe to rebuild
_DATA = {"experiments": "experiment_id != 0", "runs": "1", "registered_models": "1", "trace_info": "1",
         "logged_models": "1"}


def sqlite_file(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` URI (None for other stores and in-memory databases)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path).resolve() if path and path != ":memory:" else None


@lru_cache(maxsize=1)
def head_revision() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


def ensure_tracking_store(uri: str) -> None:
    """Make sure the SQLite store behind ``uri`` exists and is complete (once per process and file)."""
    path = sqlite_file(uri)
    if path is None or path in _ok:
        return
    with _guard:
        if path in _ok:
            return
        if not _complete(path):  # a complete store never becomes incomplete: no lock needed to see it
            from filelock import FileLock

            path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(path.with_name(f".{path.name}.lock"))):
                _remove_temporaries(path)  # lock holders create temporaries: these are a dead one's
                if not path.exists() or path.stat().st_size == 0:
                    create(path)
                elif not _complete(path):
                    repair(path)
        use_wal(path)
        _ok.add(path)


def use_wal(path: Path) -> None:
    """Put a store made before WAL mode into it (persistent; best effort: a store held open by another
    process, e.g. an MLflow UI server, keeps its mode until a later command finds it free)."""
    with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(path, timeout=1)) as con:
        if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            con.execute("PRAGMA journal_mode=WAL")


def _complete(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size == 0:
        return False
    info = inspect(path)
    return info["revision"] == head_revision() and not any(t.startswith("_alembic_tmp_") for t in info["tables"])


def inspect(path: Path) -> dict:
    """Recorded revision, tables, and whether any row of the user's history is in it."""
    # a read-write connection: opening rolls back a hot journal a killed writer left
    with contextlib.closing(sqlite3.connect(path, timeout=60)) as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        revision = None
        if "alembic_version" in tables:
            row = con.execute("SELECT version_num FROM alembic_version").fetchone()
            revision = row[0] if row else None
        rows = {t: con.execute(f"SELECT COUNT(*) FROM {t} WHERE {w}").fetchone()[0] for t, w in _DATA.items()
                if t in tables}
    return {"revision": revision, "tables": tables, "rows": rows, "has_data": any(rows.values())}


def _remove_temporaries(path: Path) -> None:
    for pattern in (f"{path.name}.tmp-*", f"{path.name}.repair-*", f"{path.name}.ref-*"):
        for tmp in path.parent.glob(pattern):
            tmp.unlink(missing_ok=True)


def _engine(path: Path):
    """An engine on a temporary store file: no syncs and an in-memory rollback journal (the file is
    synced whole before it is renamed into place; a killed build leaves only a temporary)."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(f"sqlite:///{path}", poolclass=NullPool)

    @sqlalchemy.event.listens_for(engine, "connect")
    def _unsynced(dbapi_connection, _record):
        dbapi_connection.execute("PRAGMA synchronous=OFF")
        dbapi_connection.execute("PRAGMA journal_mode=MEMORY")

    if crash.armed("mlflow-migrate"):
        sqlalchemy.event.listen(engine, "before_cursor_execute", lambda *a: crash.point("mlflow-migrate"))
    return engine


def migrate(path: Path, revision: str | None = None) -> None:
    """Create MLflow's tables in ``path`` (a temporary file) and migrate them to ``revision`` (default: the head)."""
    from alembic import command
    from mlflow.store.db.utils import _get_alembic_config, _upgrade_db
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase

    engine = _engine(path)
    try:
        if not inspect(path)["tables"]:
            InitialBase.metadata.create_all(engine)
        if revision is None:
            _upgrade_db(engine)
        else:
            config = _get_alembic_config(str(engine.url))
            with engine.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
    finally:
        engine.dispose()


def create(path: Path) -> None:
    """A new, fully migrated store beside ``path``, renamed over it when complete."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        migrate(tmp)
        if inspect(tmp)["revision"] != head_revision():
            raise PipelineError(f"creating the MLflow store {path} stopped short of MLflow's schema; "
                                "re-run the command (nothing was left half-made).")
        _wal(tmp)
        _fsync(tmp)
        crash.point("mlflow-created")
        _drop_journals(path)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _drop_journals(path: Path) -> None:
    """A journal beside a file about to be replaced must not replay onto the new one."""
    for suffix in ("-journal", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _wal(path: Path) -> None:
    """Switch a closed store file to WAL mode (recorded in the file; nothing left beside it once closed)."""
    with contextlib.closing(sqlite3.connect(path)) as con:
        con.execute("PRAGMA journal_mode=WAL")


def _fsync(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def repair(path: Path) -> None:
    """A half-migrated store: rebuilt when it holds no history, else finished on a copy (see module doc)."""
    info = inspect(path)
    if not info["has_data"]:
        create(path)
        _say(f"the MLflow store {path} was left half-made by a killed process (no runs in it); created it anew")
        return
    runs_before = info["rows"].get("runs", 0)
    work = path.with_name(f"{path.name}.repair-{os.getpid()}")
    ref = path.with_name(f"{path.name}.ref-{os.getpid()}")
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=60)) as src, \
                contextlib.closing(sqlite3.connect(work)) as dst:
            src.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the kept original holds every commit (WAL mode)
            src.backup(dst)
        if info["revision"] is None:
            raise _unrepairable(path, info, "it records no schema revision")
        migrate(ref, info["revision"])
        _rewind(work, ref, path, info)
        migrate(work)
        after = inspect(work)
        if after["revision"] != head_revision() or after["rows"].get("runs", 0) != runs_before:
            raise _unrepairable(path, info, f"the finished copy has revision {after['revision']} and "
                                            f"{after['rows'].get('runs', 0)} runs (expected {runs_before})")
        _wal(work)
        _fsync(work)
        backup = path.with_name(f"{path.name}.bak-{int(time.time())}")
        os.link(path, backup)
        _drop_journals(path)
        os.replace(work, path)
        fsync_dir(path.parent)
    finally:
        work.unlink(missing_ok=True)
        ref.unlink(missing_ok=True)
    _say(f"the MLflow store {path} was left half-migrated (revision {info['revision']}); finished its "
         f"migration keeping its {runs_before} runs (the original is kept as {backup.name})")


def _schema(con: sqlite3.Connection) -> tuple[dict[str, set[str]], dict[str, str]]:
    objs = con.execute("SELECT type, name, tbl_name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall()
    tables = {n: {r[1] for r in con.execute(f'PRAGMA table_info("{n}")')} for t, n, _ in objs if t == "table"}
    indexes = {n: tbl for t, n, tbl in objs if t == "index"}
    return tables, indexes


def _rewind(work: Path, ref: Path, path: Path, info: dict) -> None:
    """Drop from ``work`` what the half-applied migration added on top of the recorded revision."""
    with contextlib.closing(sqlite3.connect(ref)) as con:
        want_tables, want_indexes = _schema(con)
    with contextlib.closing(sqlite3.connect(work, isolation_level=None)) as con:
        have_tables, have_indexes = _schema(con)
        for name in set(have_indexes) - set(want_indexes):
            con.execute(f'DROP INDEX "{name}"')
        for name in sorted(set(have_tables) - set(want_tables)):
            base = name.removeprefix("_alembic_tmp_")
            if base != name and base not in have_tables:
                raise _unrepairable(path, info, f"its table {base} was being rebuilt and is missing")
            if base == name and con.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0]:
                raise _unrepairable(path, info, f"its table {name}, unknown at that revision, holds rows")
            con.execute(f'DROP TABLE "{name}"')
        for name, columns in want_tables.items():
            if name not in have_tables or columns - have_tables[name]:
                raise _unrepairable(path, info, f"its table {name} lacks columns of that revision")
            for column in sorted(have_tables[name] - columns):
                con.execute(f'ALTER TABLE "{name}" DROP COLUMN "{column}"')


def _unrepairable(path: Path, info: dict, why: str) -> PipelineError:
    return PipelineError(
        f"the MLflow store {path} was left half-migrated (revision {info['revision']}) and cannot be repaired "
        f"automatically: {why}; it is untouched: copy it somewhere safe, then run `mlflow db upgrade "
        f"sqlite:///{path}` or move it away to start a new store (lineage states and HEADs are not in it).")


def _say(message: str) -> None:
    print(f"conure: {message}.", file=sys.stderr, flush=True)
