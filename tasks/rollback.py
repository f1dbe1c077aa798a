"""Move a lineage back to its state after task N (``conure rollback --lineage L --to N``).

Nothing is deleted: states are content-addressed and stay under ``states/``; the HEAD being
replaced is kept under ``lineages/<name>/history/``; registry versions stay (the alias ``head``
moves to the version of the state after task N, the aliases ``tasks-k`` of the dropped tasks are
removed), and an MLflow run in the lineage's experiment records what moved. A wrongly learned
folder can then be replaced and learned again (a landed one: ``conure land SRC --replace``).
"""
from __future__ import annotations

from tasks.errors import PipelineError
from tasks.store import LineageStore, atomic_write_text


def rollback(lineage: str, to: int, store: LineageStore | None = None) -> dict:
    """Roll ``lineage`` back to its state after its first ``to`` tasks; returns what moved."""
    store = store or LineageStore()
    with store.lock(lineage):
        head = store.require_head(lineage)
        n = len(head.tasks)
        if not 1 <= to <= n:
            raise PipelineError(f"lineage '{lineage}' has {n} task(s) ({', '.join(t.name for t in head.tasks)}); "
                                f"pass --to between 1 and {n}.")
        kept, dropped = head.tasks[:to], head.tasks[to:]
        out = {"lineage": lineage, "from_tasks": n, "to_tasks": to, "dropped": [t.name for t in dropped],
               "from_state": head.state_digest, "to_state": kept[-1].state_digest}
        if not dropped:
            return {**out, "changed": False}
        if not store.has_state(out["to_state"]):
            raise PipelineError(f"the state after task {to} ({out['to_state'][:12]}) is missing from "
                                f"{store.layout.states}; nothing was changed.")
        history = store.layout.lineage_dir(lineage) / "history" / f"{int(head.updated * 1000)}-{n}-tasks.json"
        atomic_write_text(history, head.model_dump_json(indent=1))
        out["history"] = str(history)
        old = head.model_copy(deep=True)
        head.tasks = kept
        head.matrix = [row[:to] for row in head.matrix[:to]]
        store.write_head(head)
        out["mlflow"] = _record(old, head, out)
    return {**out, "changed": True}


def _record(old, new, out: dict) -> dict:
    """Registry alias ``head`` -> the kept state's version; one MLflow run saying what moved."""
    from tasks.tracking import Tracker

    tracker = Tracker(new.lineage)
    version = tracker.roll_back_registry(new.state_digest, len(new.tasks), len(old.tasks))
    run_id = tracker.start_run(f"rollback: {len(old.tasks)} -> {len(new.tasks)} tasks",
                               tags={"conure.flow": "rollback", "conure.state": new.state_digest},
                               params={k: out[k] for k in ("from_tasks", "to_tasks", "from_state", "to_state")}
                               | {"dropped": ",".join(out["dropped"])})
    tracker.end_run(run_id)
    return {"run_id": run_id, "run_url": tracker.run_url(run_id), "head_version": version}
