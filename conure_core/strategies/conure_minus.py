"""Conure- (paper Table 2): each task evaluated right after train(k), before prune(k)/retrain(k).

Built on the learner's ``ConureStrategy(leave_last_unpruned=True)``: the newest task stays unpruned
(Conure-) and is pruned and retrained only when the next task arrives (or at ``finish``). The state a
task is pruned from is the same, with the same per-stage seeds, as in a plain Conure run, so one run
yields both rows: the Conure- matrix (the runner's, evaluated after each ``learn``) and the Conure
matrix (``settled_rows``, evaluated after each task's prune + retrain).
"""
from __future__ import annotations

import copy

from conure_core.config import Preset
from conure_core.data.types import TaskData
from conure_core.lineage import Lineage
from conure_core.kinds import metric_of
from conure_core.strategies.conure import ConureStrategy


class ConureMinus(ConureStrategy):
    """Conure with the newest task left unpruned; ``finish()`` settles it and completes ``settled_rows``.

    ``start``: a Lineage that has trained T1 only (not pruned), copied instead of training T1 again.
    """

    name = "conure-"

    def __init__(self, preset: Preset, num_items: int, *, start: Lineage | None = None, **kwargs) -> None:
        kwargs.pop("leave_last_unpruned", None)
        lineage = None
        if start is not None:
            start.drop_cache()
            lineage = copy.deepcopy(start)
        super().__init__(preset, num_items, leave_last_unpruned=True, lineage=lineage, **kwargs)
        self.seen: list[TaskData] = []
        self.settled_rows: list[list[float]] = []

    def settle(self) -> None:
        """Prune + retrain the pending task and record every learned task's test metric (Conure's row)."""
        if self._pending is None:
            return
        pending, self._pending = self._pending, None
        cfg = self._config(pending)
        self.lineage.settle(pending, cfg, progress=self.progress)
        self.settled_rows.append([self.lineage.evaluate(t)[metric_of(t.kind)] for t in self.seen])

    def learn(self, task: TaskData) -> None:
        started = self.lineage.tasks == [task.name] and not self.seen
        self.settle()
        if started:
            # T1 came pre-trained (unpruned) from ``start``: it is this lineage's pending Conure- task.
            self._pending = task
        else:
            super().learn(task)
        self.seen.append(task)

    def finish(self) -> None:
        """Settle the last task, so the lineage is exactly a plain Conure run's."""
        self.settle()

    @property
    def learned(self) -> list[str]:
        return [t.name for t in self.seen]
