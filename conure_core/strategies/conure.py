"""Conure as a Strategy: a thin adapter over Lineage (train -> prune -> retrain per task)."""
from __future__ import annotations

from conure_core.config import Preset
from conure_core.data.types import TaskData
from conure_core.lineage import Lineage
from conure_core.training import Progress


class ConureStrategy:
    """One backbone plus owner maps; ``leave_last_unpruned`` keeps the newest task as Conure-.

    With ``leave_last_unpruned``, learning the next task first needs the previous task's data to
    prune and retrain it, so ``learn`` does that from the task it remembers.
    """

    name = "conure"
    num_backbones = 1

    def __init__(self, preset: Preset, num_items: int, *, overrides: dict | None = None, device: str | None = None,
                 item_vocab: list[str] | None = None, leave_last_unpruned: bool = False,
                 progress: Progress | None = None, lineage: Lineage | None = None) -> None:
        self.preset = preset.for_items(num_items)
        self.overrides = overrides or {}
        self.leave_last_unpruned = leave_last_unpruned
        self.progress = progress
        self.lineage = lineage or Lineage.new(self.preset.model, num_items, item_vocab, device=device)
        self._pending: TaskData | None = None

    def _config(self, task: TaskData):
        index = self.lineage.tasks.index(task.name) if task.name in self.lineage.tasks else len(self.lineage.tasks)
        return self.preset.train_config(index, self.overrides.get(task.name), task.kind)

    def learn(self, task: TaskData) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            cfg = self._config(pending)
            self.lineage.settle(pending, cfg, progress=self.progress)
        cfg = self._config(task)
        self.lineage.learn(task, cfg, prune=not self.leave_last_unpruned, progress=self.progress)
        if self.leave_last_unpruned:
            self._pending = task

    def evaluate(self, task: TaskData, split: str = "test") -> dict[str, float]:
        return self.lineage.evaluate(task, split)

    def storage_bytes(self) -> int:
        return self.lineage.storage_bytes()
