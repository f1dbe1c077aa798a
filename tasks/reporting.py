"""Reports of a lineage read from its HEAD (no Prefect, no MLflow): the machine-readable JSON."""
from __future__ import annotations

from tasks import adapters
from tasks.store import Head, LineageStore


def report_of(head: Head) -> dict:
    """DESIGN.md's report keys; ``matrix[i][j]`` = task j after task i, null above the diagonal."""
    n = len(head.tasks)
    return {"lineage": head.lineage, "strategy": head.strategy, "preset": head.preset,
            "tasks": [t.name for t in head.tasks], "metric": {t.name: t.metric for t in head.tasks},
            "kind": {t.name: t.kind for t in head.tasks},
            "lower_is_better": [t.name for t in head.tasks if not adapters.kind_of(t.kind).higher_is_better],
            "matrix": adapters.pad_matrix(head.matrix, n),
            "free_capacity": [t.free_capacity.get("total") for t in head.tasks],
            "catalogue": [t.catalogue for t in head.tasks],
            "state_digest": head.state_digest, "parent": head.parent, "capacity": capacity_of(head),
            "histories": head.histories}


def capacity_of(head: Head) -> dict:
    """The capacity forecast of a lineage (``conure_core.capacity.forecast``) from the free fractions in HEAD."""
    min_free = float((head.config.get("model") or {}).get("min_free") or 0.0)
    return adapters.capacity_forecast([t.name for t in head.tasks], [t.free_capacity for t in head.tasks], min_free)


def summary(report: dict) -> dict:
    """Final metrics, their mean, and backward transfer (``conure_core.cl_report``'s definitions)."""
    m = report["matrix"]
    if not m:
        return {"final": {}, "final_average": None, "backward_transfer": None}
    metrics = [report["metric"].get(t) for t in report["tasks"]] if isinstance(report.get("metric"), dict) else None
    return {"final": dict(zip(report["tasks"], m[-1])), **adapters.matrix_summary(m, metrics)}


def lineage_report(lineage: str) -> dict:
    """The report of a lineage plus its backfills (lineages whose parent is this one), for comparison."""
    store = LineageStore()
    result = report_of(store.require_head(lineage))
    result.update(summary(result))
    result["backfills"] = []
    for name in store.lineages():
        head = store.read_head(name)
        if head and head.parent and head.parent.get("lineage") == lineage:
            other = report_of(head)
            result["backfills"].append({"lineage": name, "strategy": head.strategy, "tasks": other["tasks"],
                                        "from_prefix": head.parent.get("prefix", 0), **summary(other)})
    return result
