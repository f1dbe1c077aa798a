"""Run-time settings and folder layout.

Result storage, caching and locking are declared on the Prefect tasks (``tasks/caching.py``), so a
flow run started by a Prefect worker behaves like one started by ``conure``. What is left here is
the environment of the processes that ``conure`` runs (where the embedded Prefect server keeps its
database, quiet libraries), applied when a command starts and passed to its children explicitly;
importing this module changes nothing. User-set variables always win.
"""
from __future__ import annotations

import hashlib
import logging
import os
import warnings
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def home() -> Path:
    """The run-time data folder: ``$CONURE_HOME`` or ``./.conure``."""
    return Path(os.environ.get("CONURE_HOME", ".conure")).expanduser().resolve()


class Layout:
    """Every run-time path under one home, so no other module builds paths by hand."""

    def __init__(self, root: Path | None = None):
        self.root = (root or home()).resolve()

    bundled = property(lambda s: s.root / "bundled")  # the six MovieLens-100K task folders
    landing = property(lambda s: s.root / "landing")  # default landing folder for new tasks
    prepared = property(lambda s: s.root / "prepared")  # data_contracts output, content-addressed
    states = property(lambda s: s.root / "states")  # lineage states, content-addressed by digest
    lineages = property(lambda s: s.root / "lineages")  # HEAD pointer + lock per lineage
    prefect_home = property(lambda s: s.root / "prefect")
    results = property(lambda s: s.root / "prefect" / "results")  # persisted task results (cache)
    cache_locks = property(lambda s: s.root / "prefect" / "locks")  # one lock per cache key being computed
    artifacts = property(lambda s: s.root / "mlartifacts")
    mlflow_db = property(lambda s: s.root / "mlflow.db")

    def lineage_dir(self, name: str) -> Path:
        return self.lineages / name

    def state_dir(self, digest: str) -> Path:
        return self.states / digest

    def tracking_uri(self) -> str:
        """``$MLFLOW_TRACKING_URI`` when set, else the SQLite store inside the home."""
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.mlflow_db}"


def environment(root: Path | None = None) -> dict[str, str]:
    """Settings of the processes ``conure`` runs (its own and the servers / ranks it starts).

    Only the keys the caller's environment does not set already: user-set variables always win.
    Nothing here is exported when a module is imported; ``configure_process`` applies them to the
    ``conure`` command's own process and ``child_env`` passes them to a child explicitly.
    """
    lay = Layout(root)
    env = {
        "CONURE_HOME": str(lay.root),
        "PREFECT_HOME": str(lay.prefect_home),  # the embedded server's database; Prefect reads it on import
        # analytics on the temporary server caused "database is locked" errors (DESIGN.md facts)
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
        # a loaded 2-core machine needs more than the default 20 s to boot the temporary server
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "MLFLOW_TRACKING_URI": lay.tracking_uri(),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_LOGGING_LEVEL": "WARNING",
        "DO_NOT_TRACK": "true",
    }
    return {k: v for k, v in env.items() if k not in os.environ}


def child_env(root: Path | None = None, **extra: str) -> dict[str, str]:
    """The full environment of a child process ``conure`` starts: the caller's, the run settings, ``extra``."""
    return {**os.environ, **environment(root), **extra}


def configure_process(root: Path | None = None) -> Layout:
    """Set up the ``conure`` command's own process (called when a command starts, never on import).

    Prefect reads ``PREFECT_HOME`` when it is imported, so the command sets the run settings in its
    own environment before importing it and creates that folder; quiet libraries; the crash harness.
    A library caller (a notebook, a model server) never needs this: paths are resolved from
    ``CONURE_HOME`` at call time and every folder is created by what writes into it.
    """
    lay = Layout(root)
    os.environ.update(environment(root))
    # Prefect's server needs its home folder to exist (it does not create one it was pointed at)
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    quiet_libraries()
    from tasks import crash

    crash.install()  # CONURE_CRASH_AT / CONURE_EVENTS (the crash harness); a no-op when unset
    return lay


def quiet_libraries() -> None:
    """Silence warnings and INFO chatter from MLflow, alembic and friends (they are not ours)."""
    for name in ("mlflow", "alembic", "urllib3", "great_expectations", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for module in ("mlflow", "pydantic", "great_expectations", "prefect", "alembic"):
        warnings.filterwarnings("ignore", module=module)
    warnings.filterwarnings("ignore", message=".*dataset source can be interpreted.*")


def quiet_prefect_logs() -> None:
    """Run logs at INFO (the Prefect UI shows them); Prefect's own chatter (the temporary server's
    start / stop lines) at WARNING. Call after Prefect is imported; PREFECT_LOGGING_LEVEL wins."""
    if os.environ.get("PREFECT_LOGGING_LEVEL"):
        return
    logging.getLogger("prefect").setLevel(logging.WARNING)
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logging.getLogger(name).setLevel(logging.INFO)


def quiet_prefect_console(debug: bool = False) -> None:
    """Keep Prefect's console handler from printing task tracebacks; the CLI reports errors itself."""
    level = logging.INFO if debug else logging.CRITICAL
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", "uvicorn", "uvicorn.error"):
        for handler in logging.getLogger(name).handlers:
            if type(handler).__name__ == "PrefectConsoleHandler" or name.startswith("uvicorn"):
                handler.setLevel(level)


@lru_cache(maxsize=1)
def code_version() -> str:
    """Digest of the learner's and data layer's source: part of every cache key."""
    h = hashlib.sha256()
    for pkg in ("conure_core", "data_contracts"):
        for path in sorted((REPO / pkg).rglob("*.py")):
            h.update(str(path.relative_to(REPO)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def digest_json(obj) -> str:
    """Stable digest of a JSON-able object (sorted keys)."""
    import json

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:32]
