"""Non-personalised reference scores each task must beat (most-popular, majority class, train mean, ...)."""
from __future__ import annotations

from conure_core.data.types import TaskData
from conure_core.kinds import kind_of


def naive_baseline(task: TaskData, split: str = "test", t1_targets: str = "all") -> tuple[str, dict[str, float]]:
    """(name, metrics) of the task kind's floor on ``split``, fitted on the TRAIN split only.

    The sequence task scores the same next-item targets as ``Lineage.evaluate`` (``t1_targets``).
    """
    return kind_of(task.kind).floor(task, split, t1_targets)
