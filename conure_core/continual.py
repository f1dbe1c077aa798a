"""Run an ordered list of tasks through a Lineage and build the continual-learning report."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from typing import Callable

from conure_core.cl_report import Matrix, backward_transfer, pad
from conure_core.config import Preset
from conure_core.data.types import TaskData
from conure_core.lineage import STAGES, Lineage
from conure_core.kinds import metric_of
from conure_core.naive import naive_baseline
from conure_core.training import Progress


@dataclass
class ContinualReport:
    """``matrix[i][j]`` = task j's test metric after learning task i (None above the diagonal)."""

    tasks: list[str]
    metrics: list[str]
    matrix: list[list[float | None]]
    free_capacity: list[float]
    baselines: dict[str, dict] = field(default_factory=dict)
    stages: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    kinds: list[str] = field(default_factory=list)

    def final(self) -> list[float]:
        """Every task's metric after the last task."""
        return [v for v in self.matrix[-1]]

    def backward_transfer(self) -> float:
        """Mean over earlier tasks of (final - right after learning it), sign-flipped for lower-is-better
        metrics (``cl_report``); 0 means no forgetting."""
        return backward_transfer(self.matrix, metrics=self.metrics) or 0.0

    def to_dict(self) -> dict:
        return {"tasks": self.tasks, "metric": dict(zip(self.tasks, self.metrics)), "matrix": self.matrix,
                "free_capacity": self.free_capacity, "baselines": self.baselines,
                "backward_transfer": self.backward_transfer(), "stages": self.stages, "seconds": self.seconds}


def accuracy_matrix(tasks: list[TaskData], learn: Callable[[int, TaskData], None],
                    evaluate: Callable[[TaskData], dict[str, float]],
                    after: Callable[[int, TaskData, list[float | None]], None] | None = None) -> Matrix:
    """The accuracy matrix of learning ``tasks`` in order: ``learn(i, task)``, then every learned task's
    test metric by ``evaluate(task)``; ``after(i, task, row)`` sees each padded row. The one driver
    of every in-process run (a Lineage here, any strategy in ``strategies.runner``)."""
    metrics = [metric_of(t.kind) for t in tasks]
    rows: list[list[float]] = []
    for i, task in enumerate(tasks):
        learn(i, task)
        rows.append([evaluate(t)[m] for t, m in zip(tasks[: i + 1], metrics)])
        if after:
            after(i, task, pad(rows[-1:], len(tasks))[0])
    return pad(rows, len(tasks))


def run_lineage(tasks: list[TaskData], preset: Preset, overrides: dict[str, dict] | None = None,
                leave_last_unpruned: bool = False, progress: Progress | None = None,
                lineage: Lineage | None = None, device: str | None = None) -> tuple[Lineage, ContinualReport]:
    """Learn ``tasks`` in order (train -> prune -> retrain each), evaluating all learned tasks after each.

    ``overrides`` maps a task name to TrainConfig overrides (from its manifest: prune_ratio, epochs, lr).
    """
    started = time.perf_counter()
    preset = preset.for_items(tasks[0].num_items)
    if lineage is None:
        lineage = Lineage.new(preset.model, tasks[0].num_items, list(tasks[0].vocab), device=device)
    offset = len(lineage.tasks)
    names = [t.name for t in tasks]
    metrics = [metric_of(t.kind) for t in tasks]
    free: list[float] = []
    stages: list[dict] = []

    def learn(i: int, task: TaskData) -> None:
        cfg = preset.train_config(offset + i, (overrides or {}).get(task.name), task.kind)
        settle = not (leave_last_unpruned and i == len(tasks) - 1)
        for stage in STAGES if settle else STAGES[:1]:
            result = lineage.step(stage, task, cfg, progress)
            if stage != "prune":
                stages.append({k: v for k, v in result.items() if k != "history"})

    def after(i: int, task: TaskData, row: list[float | None]) -> None:
        free.append(lineage.free_capacity()["total"])
        if progress:
            progress({"event": "task_done", "task": task.name, "row": row, "free": free[-1]})

    matrix = accuracy_matrix(tasks, learn, lineage.evaluate, after)
    baselines = {}
    for task, metric in zip(tasks, metrics):
        kind, values = naive_baseline(task, t1_targets=lineage.config.t1_targets)
        baselines[task.name] = {"name": kind, "metric": metric, "value": values[metric]}
    report = ContinualReport(names, metrics, matrix, free, baselines, stages, time.perf_counter() - started,
                             [t.kind for t in tasks])
    return lineage, report
