"""A learner = a task model + a parameter policy: what every strategy trains and serves through."""
from __future__ import annotations

import torch

from conure_core.config import TrainConfig
from conure_core.data.types import TaskData
from conure_core.model import TaskInfo, TaskModel
from conure_core.policies import ParameterPolicy
from conure_core.training import Progress, StageResult, run_stage


class Learner:
    """Learns tasks into ``model`` under ``policy`` and answers for each with the weights the policy gives it.

    ``first_kind``: the kind the first task must have ("sequence": T1; None: any, for a fresh
    per-task model such as SinMo's or DNN's).
    """

    def __init__(self, model: TaskModel, policy: ParameterPolicy, first_kind: str | None = "sequence") -> None:
        self.model, self.policy, self.first_kind = model, policy, first_kind

    @property
    def tasks(self) -> list[str]:
        return self.model.tasks

    def info(self, task_name: str) -> TaskInfo:
        return self.model.info(task_name)

    def check_new_task(self, task: TaskData) -> None:
        """Raise unless ``task`` may be learned next."""
        self.model.check_task(task, self.first_kind)

    def train(self, task: TaskData, cfg: TrainConfig, progress: Progress | None = None) -> StageResult:
        """Add ``task``'s head and run its ``train`` stage."""
        self.check_new_task(task)
        info = self.model.add_task(task, cfg)
        return run_stage(self.model, self.policy, task, info, "train", cfg, progress)

    def task_weights(self, info: TaskInfo):
        return self.policy.task_weights(self.model, info)

    def evaluate(self, task: TaskData, split: str = "test", batch_size: int = 1024) -> dict[str, float]:
        """Metrics of a learned task on one split (MRR/HR/NDCG@5 or accuracy)."""
        info = self.model.info(task.name)
        with self.policy.reading(info):
            return self.model.evaluate(task, split, info, self.task_weights(info), batch_size)

    def predict(self, task_name: str, sequences: torch.Tensor, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k label positions and scores of a learned task for T1 sequences (see ``TaskModel.predict``)."""
        info = self.model.info(task_name)
        with self.policy.reading(info):
            return self.model.predict(info, sequences, self.task_weights(info), k)

    def storage_bytes(self) -> int:
        """Bytes of everything kept to serve every learned task: backbone, heads, the policy's own tensors."""
        return self.model.backbone_bytes() + self.model.head_bytes() + self.policy.storage_bytes()
