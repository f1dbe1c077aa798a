"""Run an ordered task list through any strategy and build its continual-learning report(s)."""
from __future__ import annotations

import time

from conure_core.cl_report import CLReport, build_report
from conure_core.data.types import TaskData
from conure_core.kinds import metric_of


def lower(rows: list[list[float]], n: int) -> list[list[float | None]]:
    """Pad ragged rows (row i has i + 1 entries) to an n x n lower-triangular matrix."""
    return [list(r) + [None] * (n - len(r)) for r in rows]


def run_strategy(strategy, tasks: list[TaskData], *, reference: list[float] | None = None,
                 progress=None) -> dict[str, CLReport]:
    """Learn ``tasks`` in order, evaluating every learned task on its test split after each.

    Returns ``{strategy.name: CLReport}``; a strategy with ``finish``/``settled_rows`` (Conure-)
    also yields the settled Conure report under ``"conure"``. ``reference``: b_j for forward transfer.
    """
    started = time.perf_counter()
    names = [t.name for t in tasks]
    metrics = [metric_of(t.kind) for t in tasks]
    rows: list[list[float]] = []
    for i, task in enumerate(tasks):
        t0 = time.perf_counter()
        strategy.learn(task)
        rows.append([strategy.evaluate(t)[m] for t, m in zip(tasks[: i + 1], metrics)])
        if progress:
            progress({"event": "task_done", "strategy": strategy.name, "task": task.name, "row": rows[-1],
                      "seconds": time.perf_counter() - t0})
    extra = {"seconds": time.perf_counter() - started}
    reports = {strategy.name: build_report(strategy.name, names, metrics, lower(rows, len(tasks)),
                                           backbones=strategy.num_backbones,
                                           storage_bytes=strategy.storage_bytes(),
                                           reference=reference, extra=extra)}
    if hasattr(strategy, "finish"):
        strategy.finish()
        extra = {"seconds": time.perf_counter() - started}
        reports["conure"] = build_report("conure", names, metrics, lower(strategy.settled_rows, len(tasks)),
                                         backbones=strategy.num_backbones, storage_bytes=strategy.storage_bytes(),
                                         reference=reference, extra=extra)
    return reports
