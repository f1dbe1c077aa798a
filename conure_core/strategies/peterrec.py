"""PeterRec (SPEC section 6): T1's backbone frozen; per later task, small "model patches" plus a head.

A patch is ``y = x + Up(GELU(Down(x)))`` with Down C -> C/4 and Up C/4 -> C (1x1 convs = per-position
linear maps), applied to the output of each residual block's branch (TCN: the block's second conv;
Transformer: the block's second feed-forward layer). Up starts at zero, so a new patch begins as the
identity and the task starts from T1's representation. Patches are attached with forward hooks, so
the backbone's code is untouched and T1 (no active patch) reads the plain backbone.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from conure_core.data.types import TaskData
from conure_core.lineage import TaskInfo
from conure_core.seeding import stage_generator
from conure_core.config import TrainConfig
from conure_core.strategies.common import OneBackbone
from conure_core.strategies.engine import OpenLineage, tensor_bytes


class Patch(nn.Module):
    """``x + Up(GELU(Down(x)))`` over the channel axis (a bottleneck of width C // 4)."""

    def __init__(self, width: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        inner = max(1, width // 4)
        self.down = nn.Parameter(torch.randn(inner, width, generator=generator) / math.sqrt(width))
        self.down_bias = nn.Parameter(torch.zeros(inner))
        self.up = nn.Parameter(torch.zeros(width, inner))
        self.up_bias = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.linear(F.gelu(F.linear(x, self.down, self.down_bias)), self.up, self.up_bias)


def patch_points(backbone: nn.Module) -> list[str]:
    """Names of the modules whose output gets a patch: the last layer of each residual branch."""
    names = [n for n, _ in backbone.named_modules()]
    points = [n for n in names if n.startswith("blocks.") and n.count(".") == 2 and n.endswith((".conv2", ".ff2"))]
    if not points:
        raise ValueError(f"{type(backbone).__name__} has no residual-block output (conv2 / ff2) to patch.")
    return points


class PatchedLineage(OpenLineage):
    """An OpenLineage with a frozen backbone after T1 and per-task patches switched in by task name."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.setup_patches()

    def setup_patches(self) -> None:
        """Attach the hooks (once); also called on a PatchedLineage made by ``clone_lineage``."""
        if getattr(self, "_hooks", None):
            return
        self.policy = "none"
        self.patches: nn.ModuleDict = nn.ModuleDict()
        self.active: str | None = None
        self._hooks = []
        modules = dict(self.backbone.named_modules())
        for i, point in enumerate(patch_points(self.backbone)):
            self._hooks.append(modules[point].register_forward_hook(self._hook(i)))

    def _hook(self, i: int):
        def apply(module, args, output):
            if self.active is None or self.active not in self.patches:
                return output
            return self.patches[self.active][i](output)
        return apply

    @contextlib.contextmanager
    def use(self, name: str | None):
        previous, self.active = self.active, name
        try:
            yield
        finally:
            self.active = previous

    def add_patches(self, info: TaskInfo) -> None:
        generator = stage_generator(self.config.seed, info.index, "patch")
        count = len(self._hooks)
        self.patches[info.name] = nn.ModuleList(Patch(self.config.width, generator) for _ in range(count)).to(self.device)

    def train_with_patches(self, task: TaskData, cfg, progress=None):
        """``train`` for a later task, with the task's fresh patches created before its stage runs."""
        self.add_patches(TaskInfo(task.name, task.kind, len(self.infos) + 1, task.num_labels, "", []))
        # Patches exist before the task's stage, so ``extra_params`` hands them to its optimiser.
        return self.train(task, cfg, progress)

    def extra_params(self, info: TaskInfo, stage: str) -> list[torch.nn.Parameter]:
        return list(self.patches[info.name].parameters()) if info.name in self.patches else []

    @contextlib.contextmanager
    def stage_scope(self, info: TaskInfo, stage: str):
        with self.use(info.name):
            try:
                yield
            finally:
                for p in self.patches.parameters():
                    p.requires_grad_(False)

    def evaluate(self, task: TaskData, split: str = "test", batch_size: int = 1024) -> dict[str, float]:
        with self.use(task.name):
            return super().evaluate(task, split, batch_size)

    def predict(self, task_name: str, sequences: torch.Tensor, k: int = 10):
        with self.use(task_name):
            return super().predict(task_name, sequences, k)

    def patch_bytes(self) -> int:
        return tensor_bytes(self.patches.parameters())

    def storage_bytes(self) -> int:
        return super().storage_bytes() + self.patch_bytes()


class PeterRec(OneBackbone):
    """One frozen backbone (after T1) + per task: patches in every residual block and a head."""

    name = "peterrec"

    def first_model(self, task: TaskData) -> PatchedLineage:
        model = self.t1_model(task, cls=PatchedLineage)
        model.setup_patches()
        return model

    def train_later(self, task: TaskData, cfg: TrainConfig) -> None:
        self.model.train_with_patches(task, cfg, self.progress)
