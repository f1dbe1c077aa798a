"""Landing-folder watch: learn every new task folder dropped into a folder, once.

A folder is identified by the digest of its files: a folder whose digest a lineage already learned
is skipped; a folder that failed validation is remembered (``lineages/<name>/landing_failed.json``)
and retried only when its content changes. Sequence (T1) folders go first, then by arrival time.
"""
from __future__ import annotations

import json
from pathlib import Path

import tasks  # noqa: F401  (configures Prefect before it is imported)
from prefect import flow

from flows.learn import _kind_of, learn_dirs
from tasks import adapters
from tasks.errors import PipelineError
from tasks.settings import Layout
from tasks.store import LineageStore, write_json


def pending_folders(landing: Path, lineage: str) -> list[tuple[Path, str]]:
    """(folder, digest) of task folders not yet learned nor known to fail, in learning order."""
    store = LineageStore()
    head = store.read_head(lineage)
    learned = {t.folder_digest for t in head.tasks} if head else set()
    failed = _failed(store, lineage)
    out = []
    for d in sorted(p for p in landing.iterdir() if (p / "task.yaml").is_file()) if landing.is_dir() else []:
        digest = adapters.folder_digest(d)
        if digest not in learned and digest not in failed:
            out.append((d, digest))

    def order(item: tuple[Path, str]):
        try:
            first = _kind_of(item[0]) == "sequence"
        except Exception:  # noqa: BLE001 - a broken manifest fails later, with its own message
            first = False
        return (not first, item[0].stat().st_mtime, item[0].name)

    return sorted(out, key=order)


def _failed_path(store: LineageStore, lineage: str) -> Path:
    return store.layout.lineage_dir(lineage) / "landing_failed.json"


def _failed(store: LineageStore, lineage: str) -> dict:
    path = _failed_path(store, lineage)
    return json.loads(path.read_text()) if path.is_file() else {}


@flow(name="landing-watch", log_prints=False)
def watch_landing(landing: str | None = None, lineage: str = "default", preset: str | None = None,
                  floor: float = 0.5, lock_timeout: float | None = None) -> dict:
    """Learn each new task folder under ``landing`` (default CONURE_HOME/landing) onto ``lineage``.

    Returns {"learned": [...], "failed": {folder: error}, "skipped": n}. A failing folder does not
    stop the others; it is reported and left until its content changes.
    """
    from data_contracts.errors import ContractError

    folder = Path(landing) if landing else Layout().landing
    folder.mkdir(parents=True, exist_ok=True)
    store = LineageStore()
    learned, failed = [], {}
    for task_dir, digest in pending_folders(folder, lineage):
        try:
            report = learn_dirs(lineage, [str(task_dir)], preset, floor, lock_timeout, "landing-watch")
            learned.append({"folder": str(task_dir), "task": report["tasks"][-1] if report["tasks"] else None})
        except PipelineError as exc:  # e.g. no T1 yet: retried on the next tick
            failed[str(task_dir)] = str(exc)
        except ContractError as exc:  # bad data: remembered until the folder changes
            failed[str(task_dir)] = str(exc)
            known = _failed(store, lineage)
            known[digest] = {"folder": str(task_dir), "error": str(exc)}
            write_json(_failed_path(store, lineage), known)
    return {"lineage": lineage, "landing": str(folder), "learned": learned, "failed": failed}
