"""Landing-folder watch: learn every complete, intact task folder dropped into a folder, once.

A folder counts only once it is sealed: its producer writes ``_SUCCESS`` last, listing every file
with its size and SHA-256 (``data_contracts.landing``; ``conure land SRC`` does it). Before that it
is listed as waiting and nothing of it is read; a folder whose files do not match the marker's
hashes is not learned. A complete folder is identified by the digest of its files (the marker
left out), so a folder a lineage already learned, even through ``conure learn``, is skipped.

The lineage's landing record (``lineages/<name>/landing.json``) keeps, per folder, the stat
signature it was last seen with and its state: ``learned``, ``failed`` (bad data), ``mismatch``
(files do not match the marker) or ``refused`` (the lineage could not take it as it stood, e.g. a
task name it learned from other data). A folder is hashed again only when its files change; a
refused one is also retried when the lineage's HEAD moves (a new T1, a ``conure rollback``); a
learned one whose task the lineage no longer holds (rolled back) is learned again. Every held
folder is listed with its reason in each sweep's result. Sequence (T1) folders go first, then by
arrival time.
"""
from __future__ import annotations

import json
from pathlib import Path

from prefect import flow

from data_contracts.landing import mismatch, readiness, signature, task_folders
from flows.learn import _kind_of, learn_dirs
from tasks import adapters
from tasks.artifacts import tag_flow_run
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
    """What a sweep would do, from stat calls and (for new or changed folders only) hashes.

    Returns {"pending": [(folder, digest, signature)] in learning order, "waiting": {folder: why},
    "held": {folder: "<state>: <reason>"}, "skipped": [folder], "hashed": n, "record": the record
    with new states filled in}.
    """
    store = LineageStore()
    head = store.read_head(lineage)
    learned = {t.folder_digest for t in head.tasks} if head else set()
    head_state = head.state_digest if head else ""
    record = read_record(lineage, store)
    failed = {r["digest"]: r.get("error", "") for r in record.values() if r.get("status") == "failed"}
    pending, waiting, held, skipped, hashed = [], {}, {}, [], 0
    for d in task_folders(landing):
        key, sig = str(d.resolve()), signature(d)
        why = readiness(d, sig)
        if why:
            waiting[str(d)] = why
            continue
        known = record.get(key)
        if not (known and known["signature"] == sig):  # new or changed: the only case that reads files
            hashed += 1
            bad = mismatch(d)
            if bad:
                record[key] = known = {"signature": sig, "digest": "", "status": "mismatch", "error": bad}
            else:
                digest = adapters.folder_digest(d)
                status = "learned" if digest in learned else "failed" if digest in failed else "new"
                record[key] = known = {**(known if known and known.get("digest") == digest else {}),
                                       "signature": sig, "digest": digest, "status": status,
                                       **({"error": failed[digest]} if status == "failed" else {})}
        status = known["status"]
        if status == "learned" and known["digest"] in learned:
            skipped.append(str(d))
        elif status in ("failed", "mismatch") or (status == "refused" and known.get("head") == head_state):
            held[str(d)] = f"{status}: {known.get('error', '')}"
        else:  # new, retried after a refusal, or learned by a HEAD that was rolled back since
            pending.append((d, known["digest"], sig))

    def order(item):
        try:
            first = adapters.kind_of(_kind_of(item[0])).t1
        except Exception:  # noqa: BLE001 - a broken manifest fails later, with its own message
            first = False
        return (not first, max((e[2] for e in item[2]), default=0), item[0].name)

    return {"pending": sorted(pending, key=order), "waiting": waiting, "held": held, "skipped": skipped,
            "hashed": hashed, "record": record}


def pending_folders(landing: Path, lineage: str) -> list[tuple[Path, str]]:
    """(folder, digest) of complete task folders not yet learned nor known to fail, in learning order."""
    return [(d, digest) for d, digest, _ in scan(landing, lineage)["pending"]]


def _sweep_name() -> str:
    """``<lineage> <- landing <folder>`` from the flow run's parameters."""
    from prefect.runtime import flow_run

    p = flow_run.parameters
    return f"{p.get('lineage', 'default')} <- landing {Path(p.get('landing') or Layout().landing).name}"


@flow(name="landing-watch", flow_run_name=_sweep_name, log_prints=False)
def watch_landing(landing: str | None = None, lineage: str = "default", preset: str | None = None,
                  floor: float = 0.5, lock_timeout: float | None = None) -> dict:
    """Learn each new complete task folder under ``landing`` (default CONURE_HOME/landing) onto ``lineage``.

    Returns {"learned": [...], "failed": {folder: error}, "waiting": {folder: why}, "held": {folder:
    "<state>: reason"}, "skipped": n, "hashed": n}. A failing folder does not stop the others; it is
    reported and held until its content changes (a refused one also until the lineage's HEAD moves).
    A folder without its sealed ``_SUCCESS`` marker is left alone until the marker comes.
    """
    tag_flow_run(lineage)  # the sweep's flow run carries the lineage tag
    return _sweep(Path(landing) if landing else Layout().landing, lineage, preset, floor, lock_timeout)


def _sweep(folder: Path, lineage: str, preset: str | None, floor: float, lock_timeout: float | None) -> dict:
    from data_contracts.errors import ContractError

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
        except PipelineError as exc:  # e.g. no T1 yet, a name learned from other data: retried when HEAD moves
            failed[str(task_dir)] = str(exc)
            now = store.read_head(lineage)
            record[key] = {"signature": sig, "digest": digest, "status": "refused", "error": str(exc),
                           "head": now.state_digest if now else ""}
        except ContractError as exc:  # bad data: remembered until the folder changes
            failed[str(task_dir)] = str(exc)
            record[key] = {"signature": sig, "digest": digest, "status": "failed", "error": str(exc)}
        save()
    return {"lineage": lineage, "landing": str(folder), "learned": learned, "failed": failed,
            "waiting": found["waiting"], "held": found["held"], "skipped": len(found["skipped"]),
            "hashed": found["hashed"]}
