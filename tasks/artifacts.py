"""What a person sees of a run in the Prefect UI: run names and artifacts (a nicety: never fails a step)."""
from __future__ import annotations

import logging
import re
from pathlib import Path


def run_name(stage: str):
    """Prefect task-run name ``<lineage>/<task>/<stage>`` from the run's parameters."""
    def name() -> str:
        from prefect.runtime import task_run as current

        p = current.parameters
        ref = p.get("ref") or (p.get("refs") or [{}])[-1]
        what = ref.get("name") or Path(p.get("task_dir") or "?").name
        return f"{p.get('lineage') or '?'}/{what}/{stage}"
    return name


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")[:100]


def prefect_artifact(kind: str, **kwargs) -> None:
    """Create a Prefect artifact; a UI nicety never fails a step."""
    from prefect import artifacts

    try:
        getattr(artifacts, f"create_{kind}_artifact")(**kwargs)
    except Exception as exc:  # noqa: BLE001
        logging.getLogger("conure").warning(f"could not create the {kind} artifact {kwargs.get('key')}: {exc}")


def validation_summary(ref: dict, task_dir: str, floor: float) -> dict:
    """What a passed validation found (GX raised nothing): kept with the task's MLflow run."""
    return {"ok": True, "task": ref["name"], "kind": ref["kind"], "folder": str(Path(task_dir).resolve()),
            "rows": ref.get("rows"), "splits": ref.get("splits"), "unknown_users_quarantined": ref.get("quarantined", 0),
            "duplicates_dropped": ref.get("duplicates_dropped", 0), "known_user_floor": floor,
            "prepared_digest": ref["digest"],
            **({k: ref.get(k, 0) for k in ("interactions", "interactions_dropped", "users_cut", "max_len_note")}
               if ref.get("interactions") else {})}


def validation_markdown(summary: dict) -> str:
    if not summary.get("ok"):
        return f"### Validation FAILED\n\n{summary.get('error', '')}\n\nGX report: `{summary.get('report', '')}`\n"
    splits = summary.get("splits") or {}
    return (f"### Validation passed: `{summary['task']}` ({summary['kind']})\n\n"
            f"| folder | rows | train / valid / test | unknown users quarantined | duplicates dropped |\n"
            f"|---|---|---|---|---|\n| `{summary['folder']}` | {summary['rows']} | "
            f"{splits.get('train')} / {splits.get('valid')} / {splits.get('test')} | "
            f"{summary['unknown_users_quarantined']} | {summary['duplicates_dropped']} |\n"
            + (f"\n{summary['max_len_note']}\n" if summary.get("max_len_note") else ""))


def matrix_rows(report: dict) -> list[dict]:
    """The accuracy matrix of a report as table rows: one per learned task, a column per task."""
    tasks, metric = report["tasks"], report["metric"]
    free = report["free_capacity"]
    return [{"after": t, **{f"{c} ({metric[c]})": (None if v is None else round(v, 4)) for c, v in zip(tasks, row)},
             "free capacity": free[i] if i < len(free) else None}
            for i, (t, row) in enumerate(zip(tasks, report["matrix"]))]


def lineage_tag(lineage: str) -> str:
    return f"lineage:{lineage}"


def tag_flow_run(lineage: str) -> None:
    """Tag the current flow run ``lineage:<name>`` (a deployment run is created before its
    parameters are read, so the tag is added here). Task runs are not tagged: Prefect turns every
    task-run tag into a concurrency-slot request, which on the local SQLite server collides with its
    own writes ("database is locked", a 2 s client retry, seconds per run); their names start with
    the lineage and they are listed under their flow run. A UI nicety: never fails the run."""
    from prefect.runtime import flow_run

    tag = lineage_tag(lineage)
    try:
        if flow_run.id and tag not in (flow_run.tags or []):
            from prefect.client.orchestration import get_client

            with get_client(sync_client=True) as client:
                client.update_flow_run(flow_run.id, tags=sorted({*(flow_run.tags or []), tag}))
    except Exception as exc:  # noqa: BLE001
        logging.getLogger("conure").warning(f"could not tag the flow run with {tag}: {exc}")
