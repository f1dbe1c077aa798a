"""Run-time settings and folder layout.

Result storage, caching and locking are declared on the Prefect tasks (``tasks/caching.py``), so a
flow run started by a Prefect worker behaves like one started by ``conure``. What is left here is
the environment of processes that ``conure`` itself starts (where the embedded Prefect server keeps
its database, quiet libraries); user-set variables always win.
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


def configure_environment(root: Path | None = None) -> Layout:
    """Create the home folders and point the embedded Prefect server, MLflow and GX at them.

    Only for processes ``conure`` starts: a Prefect worker has read its settings before this runs,
    which is why nothing the pipeline needs to share (results, cache, locks) is set here.
    """
    lay = Layout(root)
    for d in (lay.prefect_home, lay.states, lay.lineages, lay.prepared, lay.artifacts):
        d.mkdir(parents=True, exist_ok=True)
    env = {
        "PREFECT_HOME": str(lay.prefect_home),  # the embedded server's database
        # analytics on the temporary server caused "database is locked" errors (DESIGN.md facts)
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
        # a loaded 2-core machine needs more than the default 20 s to boot the temporary server
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "GX_ANALYTICS_ENABLED": "false",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "MLFLOW_TRACKING_URI": lay.tracking_uri(),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_LOGGING_LEVEL": "WARNING",
        "MPLBACKEND": "Agg",  # heatmaps are files; never open a window (or need a display)
        "DO_NOT_TRACK": "true",
    }
    for key, value in env.items():
        os.environ.setdefault(key, value)
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
