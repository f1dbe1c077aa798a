"""PeterRec (SPEC section 6): T1's backbone frozen; per later task, small "model patches" plus a head.

A patch is ``y = x + Up(GELU(Down(x)))`` with Down C -> C/4 and Up C/4 -> C (1x1 convs = per-position
linear maps), applied to the output of each residual block's branch (TCN: the block's second conv;
Transformer: the block's second feed-forward layer). Up starts at zero, so a new patch begins as the
identity and the task starts from T1's representation. The patches and their hooks belong to the
``PatchPolicy`` (``conure_core.policies``); T1 (no patch of its own) reads the plain backbone.
"""
from __future__ import annotations

from conure_core.config import TrainConfig
from conure_core.data.types import TaskData
from conure_core.policies import PatchPolicy
from conure_core.strategies.common import OneBackbone


class PeterRec(OneBackbone):
    """One frozen backbone (after T1) + per task: patches in every residual block and a head."""

    name = "peterrec"

    def make_policy(self, model):
        return PatchPolicy(model)

    def train_later(self, task: TaskData, cfg: TrainConfig) -> None:
        # The patches exist before the task's stage, so the policy hands them to its optimiser.
        self.learner.policy.add_patches(task.name, len(self.learner.tasks) + 1)
        self.learner.train(task, cfg, self.progress)

    def patch_bytes(self) -> int:
        return self.learner.policy.storage_bytes() if self.learner is not None else 0
