"""Deterministic crash points for the kill -9 harness (``benchmarks.crash_points``) and its tests.

``CONURE_CRASH_AT=<point>[:<n>]`` makes the process SIGKILL its own process group (itself only when
it leads none) the n-th time (default 1) the point is reached. A point is one of:

- a named place in the pipeline's own code, ``crash.point(NAME)``: ``mlflow-migrate`` (each SQL
  statement of the tracking store's migration), ``mlflow-created`` (store complete, not yet moved
  into place), ``state-write`` (state folder complete, not yet renamed), ``state-written``,
  ``head-write`` (new HEAD in its temp file, not yet renamed), ``head-written``, ``bundled-write``;
- ``event.<kind>``: a progress event of that kind (``stage_start``, ``epoch``, ``stage_end``,
  ``evaluated``, ``step``, ...), after every sink saw it;
- ``sql.<table>``: an INSERT/UPDATE/DELETE on that table executed, its transaction not committed;
  ``sqlc.<table>``: the session that wrote it has committed;
- ``open.<glob>`` / ``rename.<glob>``: a file matching the glob opened for writing / a path matching
  it renamed (Python audit events: only files written from Python).

``CONURE_EVENTS=1`` prints every progress event as ``EVENT <json>`` on stderr (the harness reads it).
Unset, all of this costs one ``None`` check per named point; nothing else is installed.
"""
from __future__ import annotations

import fnmatch
import json
import os
import signal
import sys

_target: tuple[str, int] | None = None
_counts: dict[str, int] = {}


def _parse(spec: str) -> tuple[str, int]:
    name, _, n = spec.rpartition(":")
    return (name, int(n)) if name and n.isdigit() else (spec, 1)


def kill_now() -> None:
    """SIGKILL this process's group when it leads one (so its child servers die too), else itself."""
    sys.stderr.flush()
    if os.getpgid(0) == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def armed(name: str) -> bool:
    """Whether ``CONURE_CRASH_AT`` names this point (to install a costlier hook only then)."""
    return _target is not None and _target[0] == name


def point(name: str) -> None:
    """A named crash point: a no-op unless ``CONURE_CRASH_AT`` names it."""
    if _target is None or _target[0] != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == _target[1]:
        kill_now()


def install() -> None:
    """Read the environment once (``tasks.settings.configure_process`` calls this)."""
    global _target
    spec = os.environ.get("CONURE_CRASH_AT", "")
    if os.environ.get("CONURE_EVENTS") == "1":
        _sink(lambda e: print("EVENT " + json.dumps(e, default=str), file=sys.stderr, flush=True))
    if not spec or _target is not None:
        return
    _target = _parse(spec)
    kind, _, arg = _target[0].partition(".")
    if kind == "event":
        _sink(lambda e: e.get("event") == arg and point(_target[0]))
    elif kind in ("sql", "sqlc"):
        _sql_hooks(arg, committed=kind == "sqlc")
    elif kind in ("open", "rename"):
        _audit_hook(kind, arg)


def _sink(fn) -> None:
    from tasks import progress

    progress.add_sink(fn)


def _sql_hooks(table: str, committed: bool) -> None:
    """Crash on a write to ``table`` (before commit), or once the session that wrote it committed."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session

    name = _target[0]
    pending: set[int] = set()

    def writes(statement: str) -> bool:
        words = statement.replace('"', " ").replace("(", " ").split()[:4]
        return bool(words) and words[0].upper() in ("INSERT", "UPDATE", "DELETE") and table in words

    @event.listens_for(Engine, "after_cursor_execute")
    def _after(conn, cursor, statement, *args):  # noqa: ANN001
        if writes(statement):
            if committed:
                pending.add(id(conn.connection.dbapi_connection))
            else:
                point(name)

    if committed:
        @event.listens_for(Session, "after_commit")
        def _commit(session):  # noqa: ANN001
            if pending:
                pending.clear()
                point(name)


def _audit_hook(kind: str, pattern: str) -> None:
    name = _target[0]

    def hook(event: str, args: tuple) -> None:
        if kind == "open" and event == "open" and isinstance(args[0], (str, os.PathLike)):
            mode = args[1] or "r"
            writing = any(c in str(mode) for c in "wax+") or (isinstance(args[2], int) and args[2] & 0o3)
            if writing and fnmatch.fnmatch(os.fspath(args[0]), pattern):
                point(name)
        elif kind == "rename" and event in ("os.rename", "os.replace") and fnmatch.fnmatch(os.fspath(args[0]), pattern):
            point(name)

    sys.addaudithook(hook)
