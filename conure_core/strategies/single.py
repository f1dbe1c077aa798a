"""Strategies that keep ONE backbone for all tasks: SinMoAll (fine-tunes it, forgets) and FineSmax
(freezes it after T1, trains heads only)."""
from __future__ import annotations

from conure_core.data.types import TaskData
from conure_core.strategies.common import BaselineStrategy


class _OneBackbone(BaselineStrategy):
    policy = "all"
    num_backbones = 1

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.model = None

    def learn(self, task: TaskData) -> None:
        if self.model is None:
            self.model = self.t1_model(task, policy=self.policy)
        else:
            self.model.train(task, self.config(len(self.learned), task), self.progress)
        self.learned.append(task.name)

    def evaluate(self, task: TaskData, split: str = "test") -> dict[str, float]:
        self.check_learned(task)
        return self.model.evaluate(task, split)

    def storage_bytes(self) -> int:
        return self.model.storage_bytes() if self.model is not None else 0


class SinMoAll(_OneBackbone):
    """One backbone fine-tuned task after task (all its parameters, embedding included); nothing is
    protected, so earlier tasks are served by weights later tasks have moved (catastrophic forgetting).
    Earlier heads are kept and frozen."""

    name = "sinmoall"
    policy = "all"


class FineSmax(_OneBackbone):
    """T1's backbone frozen after T1; each later task trains only its own head (softmax layer)."""

    name = "finesmax"
    policy = "none"
