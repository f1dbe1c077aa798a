"""Parameter policies: which parameters a stage trains, what the forward reads, how gradients are gated.

A strategy is a task model (``conure_core.model``) plus one policy. The contract, used by the stage
runner (``conure_core.training.run_stage``) and by ``Learner``:

- ``param_groups(model, info, stage, cfg)``: the optimiser groups of a stage (and ``requires_grad``
  set to match); built from ``backbone_params`` + ``extra_params`` + the model's head groups;
- ``stage_weights(model, info, stage)``: the forward's weights during a stage (None: plain);
- ``task_weights(model, info)``: the weights a learned task reads at inference (None: plain);
- ``reading(info)``: a context around any forward of ``info``'s task (patches switch in here);
- ``begin_stage`` / ``gate`` / ``end_stage``: gradient gating between backward and the step;
- ``storage_bytes()``: what the policy itself stores (owner maps, patches).

Policies here: ``OpenPolicy`` (SinMo, SinMoAll, FineAll: every backbone weight trains, nothing is
protected), ``FrozenPolicy`` (FineSmax: the backbone is frozen after T1), ``PatchPolicy``
(PeterRec: frozen + per-task patches), ``JointPolicy`` (MTL: backbone and two heads on two losses).
Conure's ``OwnershipPolicy`` lives with the owner maps in ``conure_core.ownership``.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from conure_core.config import TrainConfig
from conure_core.model import TaskInfo, TaskModel, Weights, tensor_bytes
from conure_core.seeding import stage_generator


class ParameterPolicy:
    """The base contract; defaults: nothing gated, plain weights, no extra parameters."""

    name = "policy"

    def backbone_params(self, model: TaskModel, info: TaskInfo, stage: str) -> list[nn.Parameter]:
        """Backbone parameters ``stage`` of ``info`` moves."""
        raise NotImplementedError

    def extra_params(self, info: TaskInfo, stage: str) -> list[nn.Parameter]:
        """Parameters outside the model the stage trains (PeterRec's patches)."""
        return []

    def param_groups(self, model: TaskModel, info: TaskInfo, stage: str, cfg: TrainConfig) -> list[dict]:
        """Optimiser groups of a stage; every other model parameter gets ``requires_grad=False``."""
        backbone = self.backbone_params(model, info, stage)
        extra = self.extra_params(info, stage)
        for p in model.params.values():
            p.requires_grad_(False)
        for p in (*backbone, *extra):
            p.requires_grad_(True)
        # L2 on the backbone only in T1's first stage, where no weight has an owner yet (Adam's decay
        # would move weights the gate holds still).
        decay = cfg.weight_decay if info.index == 1 and stage == "train" else 0.0
        groups = [{"params": backbone, "weight_decay": decay, "lr": cfg.lr * cfg.backbone_lr_scale},
                  {"params": extra, "weight_decay": 0.0}, *model.head_groups(info, stage, cfg)]
        return [g for g in groups if g["params"]]  # Adam refuses an empty group

    def stage_weights(self, model: TaskModel, info: TaskInfo, stage: str) -> Weights:
        return None

    def task_weights(self, model: TaskModel, info: TaskInfo) -> Weights:
        return None

    @contextlib.contextmanager
    def reading(self, info: TaskInfo):
        yield

    def begin_stage(self, model: TaskModel, info: TaskInfo, stage: str) -> None:
        pass

    def gate(self, model: TaskModel) -> None:
        pass

    def end_stage(self) -> None:
        pass

    def storage_bytes(self) -> int:
        return 0


class OpenPolicy(ParameterPolicy):
    """Every backbone parameter (embedding and LayerNorms included) trains in every task; none is protected."""

    name = "open"

    def backbone_params(self, model, info, stage):
        return list(model.params.values())


class FrozenPolicy(ParameterPolicy):
    """The first task trains the whole backbone; later tasks train only their own head (and extras)."""

    name = "frozen"

    def backbone_params(self, model, info, stage):
        return list(model.params.values()) if info.index == 1 else []


class Patch(nn.Module):
    """``x + Up(GELU(Down(x)))`` over the channel axis (a bottleneck of width C // 4); Up starts at 0."""

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


class PatchPolicy(FrozenPolicy):
    """PeterRec: the backbone frozen after T1; each later task trains patches on every residual branch.

    Patches hang on forward hooks of the branch outputs (TCN ``conv2``, Transformer ``ff2``), so the
    backbone's code is untouched; a forward reads a task's patches only inside ``reading(info)``.
    """

    name = "patches"

    def __init__(self, model: TaskModel) -> None:
        self.width, self.seed, self.device = model.config.width, model.config.seed, model.device
        self.patches = nn.ModuleDict()
        self.active: str | None = None
        modules = dict(model.backbone.named_modules())
        self.hooks = [modules[p].register_forward_hook(self._hook(i)) for i, p in enumerate(patch_points(model.backbone))]

    def _hook(self, i: int):
        def apply(module, args, output):
            if self.active is None or self.active not in self.patches:
                return output
            return self.patches[self.active][i](output)
        return apply

    def add_patches(self, name: str, index: int) -> None:
        """Fresh patches for the task at 1-based position ``index`` (seeded by it)."""
        generator = stage_generator(self.seed, index, "patch")
        self.patches[name] = nn.ModuleList(Patch(self.width, generator) for _ in self.hooks).to(self.device)

    def extra_params(self, info, stage):
        return list(self.patches[info.name].parameters()) if info.name in self.patches else []

    @contextlib.contextmanager
    def reading(self, info: TaskInfo):
        previous, self.active = self.active, info.name
        try:
            yield
        finally:
            self.active = previous

    def storage_bytes(self) -> int:
        return tensor_bytes(self.patches.parameters())


class JointPolicy(ParameterPolicy):
    """MTL: every backbone parameter plus the heads of ``aux`` (T1, no decay) and of the task trained."""

    name = "joint"

    def __init__(self, aux: TaskInfo) -> None:
        self.aux = aux

    def backbone_params(self, model, info, stage):
        return list(model.params.values())

    def param_groups(self, model, info, stage, cfg):
        params = self.backbone_params(model, info, stage)
        aux, head = list(model.heads[self.aux.name].parameters()), list(model.heads[info.name].parameters())
        for p in (*params, *aux, *head):
            p.requires_grad_(True)
        return [{"params": params, "weight_decay": 0.0, "lr": cfg.lr * cfg.backbone_lr_scale},
                {"params": aux, "weight_decay": 0.0}, {"params": head, "weight_decay": cfg.head_l2}]
