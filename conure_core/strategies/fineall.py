"""FineAll: per later task, a copy of the T1 backbone fully fine-tuned on that task (N backbones)."""
from __future__ import annotations

import copy

from conure_core.data.types import TaskData
from conure_core.learner import Learner
from conure_core.policies import OpenPolicy
from conure_core.strategies.common import ModelPerTask


class FineAll(ModelPerTask):
    """T1 trains one model; task k >= 2 copies it (weights and T1 head) and fine-tunes every backbone
    parameter plus its new head. One-time transfer T1 -> Tk only; no task ever disturbs another."""

    name = "fineall"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.t1: Learner | None = None

    def learn(self, task: TaskData) -> None:
        if self.t1 is None:
            self.t1 = learner = self.t1_learner(task)
        else:
            self.t1.model.drop_cache()
            learner = Learner(copy.deepcopy(self.t1.model), OpenPolicy())
            learner.train(task, self.config(len(self.learned), task), self.progress)
        self.learners[task.name] = learner
        self.learned.append(task.name)

    def storage_bytes(self) -> int:
        # Each copy stores its backbone and its own head (T1's head lives with T1's model only).
        return sum(m.model.backbone_bytes() + m.model.head_bytes([name]) for name, m in self.learners.items())
