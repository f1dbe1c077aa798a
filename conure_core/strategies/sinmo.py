"""SinMo: a fresh model per task, trained on that task alone (no transfer; N backbones)."""
from __future__ import annotations

from conure_core.data.types import TaskData
from conure_core.kinds import kind_of
from conure_core.learner import Learner
from conure_core.policies import OpenPolicy
from conure_core.strategies.common import ModelPerTask


class SinMo(ModelPerTask):
    """Every task, T1 included, gets its own randomly initialised backbone and head.

    Later tasks read the user's T1 sequence as input features but learn the encoder from scratch on
    their own labels. ``shares_t1``: T1's own model is the shared T1 start when one is given.
    """

    name = "sinmo"
    shares_t1 = True

    def learn(self, task: TaskData) -> None:
        if not self.learned and kind_of(task.kind).t1 and self.shares_t1:
            learner = self.t1_learner(task)
        else:
            # A fresh model's only task trains everything (index 1); its config is the task's position's.
            learner = Learner(self.new_model(), OpenPolicy(), first_kind=None)
            learner.train(task, self.config(len(self.learned), task), self.progress)
        self.learners[task.name] = learner
        self.learned.append(task.name)

    def storage_bytes(self) -> int:
        return sum(learner.storage_bytes() for learner in self.learners.values())
