"""Conure's retention guarantee, in one module (SPEC section 3).

One uint8 owner map per prunable tensor: owner == 0 free, owner == t owned by task t (1-based
learning order, so at most 255 tasks). The guarantee rests on four rules, each implemented once here:

1. gating: a stage's gradients reach only the weights it may move (free ones in ``train``, the
   task's own in ``retrain``); with a fresh Adam per stage and no weight decay on the backbone, a
   weight whose gradient is always zero is never updated, so earlier tasks' weights stay bit-identical;
2. masked forward: ``retrain`` of task k reads ``where(1 <= owner <= k, W, 0)``;
3. effective weights: a learned task j reads ``W * (1 <= owner <= j)`` forever (cached);
4. pruning: task k keeps the largest-|w| share of the free weights it trained (an exact count).

``OwnershipPolicy`` applies these rules to a task model through the parameter-policy contract
(``conure_core.policies``); ``conure_core.lineage.Lineage`` orders the stages.
"""
from __future__ import annotations

import torch

from conure_core.errors import ConureError
from conure_core.model import TaskInfo, TaskModel, Weights
from conure_core.policies import ParameterPolicy

MAX_TASKS = 255


class CapacityError(ConureError, RuntimeError):
    """The free pool of the backbone is empty or below the configured floor."""


class Ownership:
    """Owner maps for a set of named tensors, with gating masks, pruning and cached effective weights."""

    def __init__(self, params: dict[str, torch.Tensor]) -> None:
        self.maps: dict[str, torch.Tensor] = {
            name: torch.zeros(p.shape, dtype=torch.uint8, device=p.device) for name, p in params.items()
        }
        self._gates: dict[str, torch.Tensor] = {}
        self._effective: dict[tuple[int, bool], dict[str, torch.Tensor]] = {}

    @property
    def names(self) -> list[str]:
        return list(self.maps)

    # ---- masks -------------------------------------------------------------------------------
    def task_mask(self, name: str, task: int, include_free: bool = False) -> torch.Tensor:
        """Bool mask of the weights task ``task`` reads: 1 <= owner <= task (plus free ones if asked)."""
        owner = self.maps[name]
        mask = owner <= task
        return mask if include_free else mask & (owner >= 1)

    def trainable_mask(self, name: str, stage: str, task: int) -> torch.Tensor:
        """Weights a stage may move: free ones in ``train``, the task's own in ``retrain``."""
        owner = self.maps[name]
        if stage == "train":
            return owner == 0
        if stage == "retrain":
            return owner == task
        raise ValueError(f"stage {stage!r} trains nothing; use 'train' or 'retrain'.")

    # ---- gating ------------------------------------------------------------------------------
    def begin_stage(self, params: dict[str, torch.Tensor], stage: str, task: int) -> None:
        """Precompute the gradient gates of a stage (float masks in each parameter's dtype)."""
        self._gates = {n: self.trainable_mask(n, stage, task).to(params[n].dtype) for n in self.maps}
        self.invalidate()

    def gate_grads(self, params: dict[str, torch.Tensor]) -> None:
        """Zero the gradient of every weight the current stage may not move.

        With a fresh Adam per stage and no weight decay, a weight whose gradient is always zero keeps
        zero moments, so its update is exactly zero: frozen weights stay bit-identical.
        """
        for name, gate in self._gates.items():
            grad = params[name].grad
            if grad is not None:
                grad.mul_(gate)

    def end_stage(self) -> None:
        self._gates = {}
        self.invalidate()

    # ---- forward weights ---------------------------------------------------------------------
    def masked(self, params: dict[str, torch.Tensor], task: int, include_free: bool = False) -> dict[str, torch.Tensor]:
        """``where(mask, W, 0)`` per tensor, differentiable (used by retrain's forward).

        ``where`` rather than a multiply so a non-finite value in a foreign weight cannot leak as NaN.
        """
        return {n: torch.where(self.task_mask(n, task, include_free), params[n], torch.zeros((), dtype=params[n].dtype, device=params[n].device))
                for n in self.maps}

    @torch.no_grad()
    def effective(self, params: dict[str, torch.Tensor], task: int, include_free: bool = False) -> dict[str, torch.Tensor]:
        """Task ``task``'s inference weights, cached until the next stage or prune."""
        key = (task, include_free)
        if key not in self._effective:
            self._effective[key] = {n: w.detach() for n, w in self.masked(params, task, include_free).items()}
        return self._effective[key]

    def invalidate(self) -> None:
        self._effective.clear()

    def grow(self, params: dict[str, torch.Tensor], owner: int) -> None:
        """Maps of tensors that gained rows (a growing item catalogue) get those rows, owned by ``owner``."""
        for name, m in self.maps.items():
            extra = params[name].shape[0] - m.shape[0]
            if extra > 0:
                self.maps[name] = torch.cat([m, torch.full((extra, *m.shape[1:]), owner, dtype=m.dtype, device=m.device)])
        self.invalidate()

    # ---- pruning -----------------------------------------------------------------------------
    @torch.no_grad()
    def prune(self, params: dict[str, torch.Tensor], task: int, ratio: float, zero_freed: bool = False) -> dict[str, int]:
        """Give task ``task`` the largest-|w| share of the free weights of every tensor.

        Per tensor, with n free weights, exactly ``n - round(ratio * n)`` are kept (owner = task) and
        the rest stay free. The count is exact: a stable descending sort of |w| breaks ties at the
        threshold by lower flat index (SPEC's "ties are kept" would overshoot the intended count).
        ``zero_freed`` zeroes the released weights in storage (PackNet) instead of keeping them (Conure).
        Returns the kept count per tensor.
        """
        if not 1 <= task <= MAX_TASKS:
            raise ValueError(f"task index {task} is outside 1..{MAX_TASKS}; an owner map is one byte per weight.")
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"prune ratio {ratio} must be in [0, 1): the share of free weights to release.")
        kept: dict[str, int] = {}
        for name, owner in self.maps.items():
            flat_owner = owner.view(-1)
            free = flat_owner == 0
            n = int(free.sum())
            keep = n - int(round(ratio * n))
            # Occupied weights get -1 so they sort after every free one (|w| >= 0).
            magnitude = torch.where(free, params[name].detach().abs().view(-1).float(), torch.tensor(-1.0, device=owner.device))
            order = torch.sort(magnitude, descending=True, stable=True).indices[:keep]
            flat_owner[order] = task
            kept[name] = keep
            if zero_freed:
                params[name].data.view(-1)[flat_owner == 0] = 0
        self.invalidate()
        return kept

    # ---- capacity ----------------------------------------------------------------------------
    def free_capacity(self) -> dict[str, float]:
        """Fraction of free weights per tensor and in total ('total')."""
        out: dict[str, float] = {}
        free_all, size_all = 0, 0
        for name, owner in self.maps.items():
            free = int((owner == 0).sum())
            out[name] = free / owner.numel()
            free_all += free
            size_all += owner.numel()
        out["total"] = free_all / size_all if size_all else 0.0
        return out

    def check_capacity(self, task_name: str, floor: float = 0.0) -> None:
        """Raise CapacityError when no weight is free or the free share is at or below ``floor``."""
        free = self.free_capacity()["total"]
        if free <= 0.0 or (floor > 0.0 and free <= floor):
            raise CapacityError(
                f"cannot learn task {task_name!r}: only {free:.1%} of the backbone's prunable weights are free "
                f"(floor {floor:.1%}); prune earlier tasks harder (a higher prune ratio) or start a new lineage.")


class OwnershipPolicy(ParameterPolicy):
    """Conure's policy: T1's first stage trains everything; after that only prunable weights move,
    gated by their owner maps; learned tasks read their effective weights."""

    name = "ownership"

    def __init__(self, model: TaskModel, prune_embedding: bool = False) -> None:
        prunable = model.backbone.prunable_names()
        if prune_embedding:
            prunable = ["embedding.weight", *prunable]
        self.ownership = Ownership({n: model.params[n] for n in prunable})

    def backbone_params(self, model, info, stage):
        everything = info.index == 1 and stage == "train"
        return [p for n, p in model.params.items() if everything or n in self.ownership.maps]

    def stage_weights(self, model, info, stage) -> Weights:
        return self.ownership.masked(model.params, info.index) if stage == "retrain" else None

    def task_weights(self, model, info: TaskInfo) -> Weights:
        # An unpruned (Conure-) task still reads the free weights it trained.
        return self.ownership.effective(model.params, info.index, include_free=not info.pruned)

    def begin_stage(self, model, info, stage) -> None:
        self.ownership.begin_stage(model.params, stage, info.index)

    def gate(self, model) -> None:
        self.ownership.gate_grads(model.params)

    def end_stage(self) -> None:
        self.ownership.end_stage()

    def storage_bytes(self) -> int:
        return sum(m.numel() for m in self.ownership.maps.values())
