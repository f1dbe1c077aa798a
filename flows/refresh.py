"""Fresh histories without retraining: a T1 update folder refreshes the users' stored histories that
``user`` answers read, as a new registered version of the same lineage state (``conure refresh``)."""
from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.chain import FlowRun, ref_of
from tasks import adapters, steps
from tasks.errors import PipelineError


@flow(name="refresh-histories", flow_run_name="{lineage} <- histories", log_prints=False)
def refresh_histories(update_dir: str, lineage: str = "default", lock_timeout: float | None = None) -> dict:
    """Validate ``update_dir`` (a T1 folder: new or longer user rows) and refresh the lineage's stored histories."""
    update = Path(update_dir).resolve()
    if not update.is_dir():
        raise PipelineError(f"update folder {update_dir} does not exist; pass a T1 folder (task.yaml, kind sequence, "
                            "and its table of user histories).")
    with FlowRun(lineage, "refresh", {"lineage": lineage, "update_dir": str(update)}, lock_timeout) as fr:
        head = fr.store.require_head(lineage)
        if not head.state_digest:
            raise PipelineError(f"lineage '{lineage}' has no learned state to serve; learn its T1 first.")
        base = head.histories or ref_of(head.tasks[0])
        out = fr.stats.call(steps.refresh, lineage=lineage, update_dir=str(update),
                            folder_digest=adapters.folder_digest(update), base=base, state=head.state_digest,
                            names=[t.name for t in head.tasks], track=fr.track(len(head.tasks), head.strategy))
        if head.histories != out["histories"]:
            head.histories = out["histories"]
            fr.store.write_head(head)
        return {"lineage": lineage, "state_digest": head.state_digest, **out, "run": fr.stats.to_dict()}
