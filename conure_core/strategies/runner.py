"""Run an ordered task list through any strategy and build its continual-learning report(s)."""
from __future__ import annotations

import time

from conure_core.cl_report import CLReport, build_report, pad
from conure_core.continual import accuracy_matrix
from conure_core.data.types import TaskData
from conure_core.kinds import metric_of


def run_strategy(strategy, tasks: list[TaskData], *, reference: list[float] | None = None,
                 progress=None) -> dict[str, CLReport]:
    """Learn ``tasks`` in order, evaluating every learned task on its test split after each.

    Returns ``{strategy.name: CLReport}``; a strategy with ``finish``/``settled_rows`` (Conure-)
    also yields the settled Conure report under ``"conure"``. ``reference``: b_j for forward transfer.
    """
    started = time.perf_counter()
    names = [t.name for t in tasks]
    metrics = [metric_of(t.kind) for t in tasks]
    t0 = [started]

    def learn(_i: int, task: TaskData) -> None:
        t0[0] = time.perf_counter()
        strategy.learn(task)

    def after(i: int, task: TaskData, row: list[float | None]) -> None:
        if progress:
            progress({"event": "task_done", "strategy": strategy.name, "task": task.name, "row": row[: i + 1],
                      "seconds": time.perf_counter() - t0[0]})

    matrix = accuracy_matrix(tasks, learn, strategy.evaluate, after)
    extra = {"seconds": time.perf_counter() - started}
    reports = {strategy.name: build_report(strategy.name, names, metrics, matrix,
                                           backbones=strategy.num_backbones,
                                           storage_bytes=strategy.storage_bytes(),
                                           reference=reference, extra=extra)}
    if hasattr(strategy, "finish"):
        strategy.finish()
        extra = {"seconds": time.perf_counter() - started}
        reports["conure"] = build_report("conure", names, metrics, pad(strategy.settled_rows, len(tasks)),
                                         backbones=strategy.num_backbones, storage_bytes=strategy.storage_bytes(),
                                         reference=reference, extra=extra)
    return reports
