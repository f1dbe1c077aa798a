"""MTL (paper section 5.1): for each later task, one fresh backbone trained jointly on T1's loss and
that task's loss (two objectives, from scratch; "the only difference from SinMo is an additional T1
loss"). One backbone per (T1, Tk) pair."""
from __future__ import annotations

import dataclasses
import math

import torch

from conure_core.config import TrainConfig
from conure_core.data.types import TaskData
from conure_core.learner import Learner
from conure_core.model import TaskInfo, TaskModel
from conure_core.policies import JointPolicy
from conure_core.strategies.common import BaselineStrategy, StrategyError
from conure_core.training import StageResult, run_stage


class JointLoss:
    """loss(Tk batch) + loss(T1 batch): each Tk batch is paired with a T1 batch drawn with replacement,
    sized so one Tk epoch also sees about one epoch of T1's training users.

    Both losses are the model's own; Tk's class loss here has no label smoothing or user dropout.
    """

    def __init__(self, model: TaskModel, t1: TaskData, info1: TaskInfo, cfg1: TrainConfig,
                 task: TaskData, infok: TaskInfo, cfgk: TrainConfig, generator: torch.Generator) -> None:
        self.generator = generator
        self.main = model.loss(task, infok, dataclasses.replace(cfgk, label_smoothing=0.0, user_dropout=0.0), generator)
        self.aux = model.loss(t1, info1, cfg1, generator)
        self.num_rows = self.main.num_rows
        steps = max(1, math.ceil(self.num_rows / cfgk.batch_size))
        self.aux_batch = max(cfg1.batch_size, math.ceil(self.aux.num_rows / steps))

    def order(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randperm(self.num_rows, generator=generator)

    def __call__(self, idx: torch.Tensor, weights=None) -> torch.Tensor:
        main = self.main(idx, weights)
        pick = torch.randint(self.aux.num_rows, (self.aux_batch,), generator=self.generator)
        return main + self.aux(pick, weights)


def joint_stage(model: TaskModel, t1: TaskData, task: TaskData, cfg1: TrainConfig, cfgk: TrainConfig,
                progress=None) -> StageResult:
    """Train every parameter of ``model`` (both tasks added) on the joint loss; validation, early stopping
    and the kept epoch follow Tk's metric (T1 is the auxiliary objective)."""
    info1, infok = model.info(t1.name), model.info(task.name)

    def make_loss(generator: torch.Generator) -> JointLoss:
        return JointLoss(model, t1, info1, cfg1, task, infok, cfgk, generator)

    return run_stage(model, JointPolicy(info1), task, infok, "mtl", dataclasses.replace(cfgk, select="metric"),
                     progress, make_loss)


class MTL(BaselineStrategy):
    """T1 alone first (a plain T1 model); then per task k a fresh model trained on T1 + Tk jointly.

    Task k is served by its pair model; T1 after task k is read from the newest pair model (each pair
    model is trained on T1 too), so MTL's T1 column shows what joint training leaves of T1.
    """

    name = "mtl"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.t1_task: TaskData | None = None
        self.t1_alone: Learner | None = None
        self.pairs: dict[str, Learner] = {}

    def learn(self, task: TaskData) -> None:
        if self.t1_task is None:
            self.t1_alone = self.t1_learner(task)
            self.t1_task = task
        else:
            model = self.new_model()
            cfg1, cfgk = self.config(0, self.t1_task), self.config(len(self.learned), task)
            model.check_task(self.t1_task)
            info1 = model.add_task(self.t1_task, cfg1)
            model.check_task(task)
            model.add_task(task, cfgk)
            joint_stage(model, self.t1_task, task, cfg1, cfgk, self.progress)
            self.pairs[task.name] = Learner(model, JointPolicy(info1))
        self.learned.append(task.name)

    def learner_for(self, task: TaskData) -> Learner:
        if task.name == self.learned[0]:
            return list(self.pairs.values())[-1] if self.pairs else self.t1_alone
        if task.name not in self.pairs:
            raise StrategyError(f"mtl has no model for task {task.name!r}; learned: {self.learned}.")
        return self.pairs[task.name]

    def evaluate(self, task: TaskData, split: str = "test") -> dict[str, float]:
        self.check_learned(task)
        return self.learner_for(task).evaluate(task, split)

    @property
    def num_backbones(self) -> int:
        return max(1, len(self.pairs))

    def storage_bytes(self) -> int:
        learners = list(self.pairs.values()) or ([self.t1_alone] if self.t1_alone else [])
        return sum(m.storage_bytes() for m in learners)
