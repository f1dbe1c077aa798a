"""The baselines' training engine: the learner's ``Lineage`` with ownership switched off.

Every baseline of Table 2 trains with exactly the learner's code (same backbone, heads, losses,
samplers, seeded stages, early stopping, evaluation); only WHICH parameters a stage moves differs.
``OpenLineage`` therefore subclasses ``Lineage`` and overrides two public hooks:
- ``trainable_groups``: the backbone parameters a task's stage trains come from a ``policy``
  ("all" | "none" | "prunable"), not from owner maps;
- ``check_new_task``: no pruning between tasks, and (for a fresh per-task model) a first task that
  is not the sequence task is allowed.
Owner maps stay all-free, so gradient gating multiplies by ones and every task reads the current
weights: nothing is protected, which is the point of a baseline.
"""
from __future__ import annotations

import copy
import dataclasses

import torch

from conure_core.config import ModelConfig, TrainConfig
from conure_core.data.types import TaskData
from conure_core.lineage import Lineage, LineageError, TaskInfo

POLICIES = ("all", "none", "prunable")


def tensor_bytes(tensors) -> int:
    """Bytes of an iterable of tensors."""
    return sum(t.numel() * t.element_size() for t in tensors)


class OpenLineage(Lineage):
    """A Lineage whose later tasks train the backbone parameters named by ``policy``; no ownership.

    policy: "all" = every backbone parameter (embedding, LayerNorms, projections); "none" = the
    backbone is frozen after T1 (only heads and ``extra_params`` train); "prunable" = the prunable set.
    The first task always trains everything (as in Conure's T1). ``any_first_kind`` lets a fresh
    per-task model (SinMo, DNN) start with an item or class task.
    """

    def __init__(self, config: ModelConfig, num_items: int, item_vocab: list[str] | None = None,
                 device: str | torch.device | None = None, *, policy: str = "all",
                 any_first_kind: bool = False, backbone: torch.nn.Module | None = None) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy {policy!r} is unknown; use one of {POLICIES}.")
        super().__init__(config, num_items, item_vocab, device)
        self.policy = policy
        self.any_first_kind = any_first_kind
        if backbone is not None:
            self.replace_backbone(backbone)

    # ---- hooks over Lineage --------------------------------------------------------------------
    def extra_params(self, info: TaskInfo, stage: str) -> list[torch.nn.Parameter]:
        """Further parameters the stage of ``info`` trains (PeterRec's patches); none by default."""
        return []

    def backbone_params(self, info: TaskInfo, stage: str) -> list[torch.nn.Parameter]:
        if info.index == 1 or self.policy == "all":
            return list(self.params.values())
        if self.policy == "prunable":
            return [self.params[n] for n in self.ownership.maps]
        return []

    def trainable_groups(self, info: TaskInfo, stage: str, cfg: TrainConfig) -> list[dict]:
        groups = super().trainable_groups(info, stage, cfg)  # sets the heads' requires_grad
        backbone = self.backbone_params(info, stage)
        for p in self.params.values():
            p.requires_grad_(False)
        for p in backbone:
            p.requires_grad_(True)
        extra = self.extra_params(info, stage)
        for p in extra:
            p.requires_grad_(True)
        # The learner's backbone group keeps its options (e.g. a scaled lr); patches train like heads.
        out = [{**groups[0], "params": backbone}, {"params": extra, "weight_decay": 0.0}] + groups[1:]
        # Adam refuses an empty group list; a frozen backbone simply contributes no group.
        return [g for g in out if g["params"]]

    def check_new_task(self, task: TaskData) -> None:
        if task.name in self.tasks:
            raise LineageError(f"task {task.name!r} is already learned by this model; give the new data another name.")
        if task.num_items != self.num_items:
            raise LineageError(f"task {task.name!r} was prepared against {task.num_items} T1 items but this model "
                               f"has {self.num_items}; prepare it against the same T1 task.")
        if not self.infos and task.kind != "sequence" and not self.any_first_kind:
            raise LineageError(f"the first task must be the T1 sequence task, not {task.kind!r} task {task.name!r}.")

    # ---- helpers for strategies ------------------------------------------------------------------
    def register(self, task: TaskData, cfg: TrainConfig) -> TaskInfo:
        """Add a task's head and info without training it (MTL trains two heads in one stage).

        A zero-epoch ``train`` builds the head exactly as the learner does (prior bias, init scale,
        normalisation) and only runs one validation pass.
        """
        self.train(task, dataclasses.replace(cfg, epochs=0))
        return self.info(task.name)

    def backbone_bytes(self) -> int:
        return tensor_bytes(self.params.values())

    def head_bytes(self, names: list[str] | None = None) -> int:
        heads = self.heads if names is None else {n: self.heads[n] for n in names}
        return tensor_bytes(p for h in heads.values() for p in h.parameters())

    def storage_bytes(self) -> int:
        """Backbone + heads (no owner maps: a baseline keeps none)."""
        return self.backbone_bytes() + self.head_bytes()


def clone_lineage(source: Lineage, cls=None, **attrs) -> "OpenLineage":
    """A deep copy of ``source`` (an already trained T1, say) as an ``OpenLineage`` of class ``cls``.

    Training T1 is identical for every strategy (same seeds, same stage), so a benchmark trains it once
    and every strategy starts from a copy; ``attrs`` sets the copy's policy and flags.
    """
    # The per-task user cache holds task tensors; the copy must not duplicate them.
    source.drop_cache()
    twin = copy.deepcopy(source)
    twin.__class__ = cls or OpenLineage
    defaults = {"policy": "all", "any_first_kind": False}
    for key, value in {**defaults, **attrs}.items():
        setattr(twin, key, value)
    return twin
