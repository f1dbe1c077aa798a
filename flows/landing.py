"""Landing-folder watch: learn every complete task folder dropped into a folder, once.

A folder counts only once it is complete: its producer writes ``_SUCCESS`` last
(``data_contracts.landing``); before that it is listed as waiting and nothing of it is read. A
complete folder is identified by the digest of its files (the marker left out), so a folder a
lineage already learned, even through ``conure learn``, is skipped. The lineage's landing record
(``lineages/<name>/landing.json``) keeps, per folder, the stat signature it was last seen with and
the outcome: a learned or failed folder whose files have not changed is skipped on a ``stat`` of
its files, without hashing; a folder that failed validation is retried only when its content
changes. Sequence (T1) folders go first, then by arrival time.
"""
from __future__ import annotations

import json
from pathlib import Path

import tasks  # noqa: F401  (configures Prefect before it is imported)
from prefect import flow

from data_contracts.landing import readiness, signature, task_folders
from flows.learn import _kind_of, learn_dirs
from tasks import adapters
from tasks.errors import PipelineError
from tasks.settings import Layout
from tasks.store import LineageStore, write_json

RECORD = "landing.json"


def _record_path(store: LineageStore, lineage: str) -> Path:
    return store.layout.lineage_dir(lineage) / RECORD


def read_record(lineage: str, store: LineageStore | None = None) -> dict:
    """{folder path: {"signature", "digest", "status": learned | failed, "error"?}} of a lineage."""
    path = _record_path(store or LineageStore(), lineage)
    return json.loads(path.read_text()) if path.is_file() else {}


def scan(landing: Path, lineage: str) -> dict:
    """What a sweep would do, from stat calls and (for new or changed folders only) digests.

    Returns {"pending": [(folder, digest, signature)] in learning order, "waiting": {folder: why},
    "skipped": [folder], "hashed": n, "record": the record with unchanged entries refreshed}.
    """
    store = LineageStore()
    head = store.read_head(lineage)
    learned = {t.folder_digest for t in head.tasks} if head else set()
    record = read_record(lineage, store)
    failed = {r["digest"] for r in record.values() if r.get("status") == "failed"}
    pending, waiting, skipped, hashed = [], {}, [], 0
    for d in task_folders(landing):
        key, sig = str(d.resolve()), signature(d)
        why = readiness(d, sig)
        if why:
            waiting[str(d)] = why
            continue
        known = record.get(key)
        if known and known["signature"] == sig:  # the cheap check: nothing changed since last seen
            skipped.append(str(d))
            continue
        digest = adapters.folder_digest(d)
        hashed += 1
        if digest in learned or digest in failed:
            status = "learned" if digest in learned else "failed"
            record[key] = {**(known if known and known.get("digest") == digest else {}),
                           "signature": sig, "digest": digest, "status": status}
            skipped.append(str(d))
        else:
            pending.append((d, digest, sig))

    def order(item):
        try:
            first = adapters.kind_of(_kind_of(item[0])).t1
        except Exception:  # noqa: BLE001 - a broken manifest fails later, with its own message
            first = False
        return (not first, max((e[2] for e in item[2]), default=0), item[0].name)

    return {"pending": sorted(pending, key=order), "waiting": waiting, "skipped": skipped, "hashed": hashed,
            "record": record}


def pending_folders(landing: Path, lineage: str) -> list[tuple[Path, str]]:
    """(folder, digest) of complete task folders not yet learned nor known to fail, in learning order."""
    return [(d, digest) for d, digest, _ in scan(landing, lineage)["pending"]]


@flow(name="landing-watch", log_prints=False)
def watch_landing(landing: str | None = None, lineage: str = "default", preset: str | None = None,
                  floor: float = 0.5, lock_timeout: float | None = None) -> dict:
    """Learn each new complete task folder under ``landing`` (default CONURE_HOME/landing) onto ``lineage``.

    Returns {"learned": [...], "failed": {folder: error}, "waiting": {folder: why}, "skipped": n,
    "hashed": n}. A failing folder does not stop the others; it is reported and left until its
    content changes. A folder without its ``_SUCCESS`` marker is left alone until the marker comes.
    """
    from data_contracts.errors import ContractError

    folder = Path(landing) if landing else Layout().landing
    folder.mkdir(parents=True, exist_ok=True)
    store = LineageStore()
    found = scan(folder, lineage)
    record = found["record"]

    def save() -> None:  # after every folder: a crash keeps what was already learned on record
        if record != read_record(lineage, store):
            write_json(_record_path(store, lineage), record)

    save()
    learned, failed = [], {}
    for task_dir, digest, sig in found["pending"]:
        key = str(task_dir.resolve())
        try:
            report = learn_dirs(lineage, [str(task_dir)], preset, floor, lock_timeout, "landing-watch")
            learned.append({"folder": str(task_dir), "task": report["tasks"][-1] if report["tasks"] else None})
            record[key] = {"signature": sig, "digest": digest, "status": "learned"}
        except PipelineError as exc:  # e.g. no T1 yet: retried on the next sweep
            failed[str(task_dir)] = str(exc)
        except ContractError as exc:  # bad data: remembered until the folder changes
            failed[str(task_dir)] = str(exc)
            record[key] = {"signature": sig, "digest": digest, "status": "failed", "error": str(exc)}
        save()
    return {"lineage": lineage, "landing": str(folder), "learned": learned, "failed": failed,
            "waiting": found["waiting"], "skipped": len(found["skipped"]), "hashed": found["hashed"]}
