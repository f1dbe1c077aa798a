"""Lineage: Conure's learner, one backbone accumulating tasks without forgetting (SPEC section 3).

A Lineage is a ``TaskModel`` under the ``OwnershipPolicy`` plus the order of Conure's stages. The
newest task moves through one state machine; one guard (``_transition``, Avalanche PackNet's style)
checks every step and, when the step succeeds, performs its transition:

    train(k) -> TRAINED (Conure-) -> prune(k) -> PRUNED -> retrain(k) -> SETTLED -> train(k + 1) ...

``step(stage, task, cfg)`` is the one stage entry point every driver calls (``continual.run_lineage``,
the pipeline's single-process stages, its torchrun workers), returning a JSON-safe result; ``learn``
and ``settle`` are shorthands over the same guarded stages.

``train``: all weights in the forward, gradients to free weights only; ``prune``: the task keeps
its largest free weights; ``retrain``: forward with owner in 1..k, gradients to the task's own
weights. Task j then reads ``W * (1 <= owner <= j)`` forever (``conure_core.ownership``).
"""
from __future__ import annotations

import contextlib
import copy
import enum

import torch

from conure_core.config import ModelConfig, TrainConfig
from conure_core.data.types import TaskData
from conure_core.catalogue import introduced, new_item_rows
from conure_core.kinds import KINDS, T1_KIND, kind_of
from conure_core.learner import Learner
from conure_core.model import LineageError, TaskInfo, TaskModel, resolve_device
from conure_core.ownership import MAX_TASKS, CapacityError, Ownership, OwnershipPolicy
from conure_core.training import Progress, StageResult, run_stage

__all__ = ["Lineage", "LineageError", "CapacityError", "Phase", "TaskInfo", "resolve_device"]


class Phase(enum.Enum):
    """Where the newest task of a lineage stands (saved as TaskInfo's ``pruned`` / ``retrained`` flags)."""

    TRAINED = "trained"  # after train(k): Conure-, still reading its free weights
    PRUNED = "pruned"  # after prune(k): owns its kept weights, not yet retrained
    SETTLED = "settled"  # after retrain(k): frozen forever; the next task may start

    @classmethod
    def of(cls, info: TaskInfo) -> "Phase":
        return cls.SETTLED if info.retrained else cls.PRUNED if info.pruned else cls.TRAINED

    def enter(self, info: TaskInfo) -> None:
        """Record this phase in ``info`` (the flags a saved state carries)."""
        info.pruned = self in (Phase.PRUNED, Phase.SETTLED)
        info.retrained = self is Phase.SETTLED


# The one step each phase allows next, and the phase each step leads to.
NEXT_STEP = {Phase.TRAINED: "prune", Phase.PRUNED: "retrain", Phase.SETTLED: "train"}
AFTER = {"train": Phase.TRAINED, "prune": Phase.PRUNED, "retrain": Phase.SETTLED}
STAGES = tuple(AFTER)


class Lineage(Learner):
    """The state of one model that learns tasks in order; see the module docstring."""

    def __init__(self, config: ModelConfig, num_items: int, item_vocab: list[str] | None = None,
                 device: str | torch.device | None = None) -> None:
        model = TaskModel(config, num_items, item_vocab, device)
        super().__init__(model, OwnershipPolicy(model, config.prune_embedding))

    @classmethod
    def new(cls, config: ModelConfig, num_items: int, item_vocab: list[str] | None = None,
            device: str | torch.device | None = None) -> "Lineage":
        """A fresh lineage for a T1 vocabulary of ``num_items`` items."""
        return cls(config, num_items, item_vocab, device)

    # ---- what the model holds ----------------------------------------------------------------
    config = property(lambda self: self.model.config)
    num_items = property(lambda self: self.model.num_items)
    item_vocab = property(lambda self: self.model.item_vocab)
    device = property(lambda self: self.model.device)
    backbone = property(lambda self: self.model.backbone)
    params = property(lambda self: self.model.params)
    heads = property(lambda self: self.model.heads)
    infos = property(lambda self: self.model.infos)

    @property
    def ownership(self) -> Ownership:
        return self.policy.ownership

    def free_capacity(self) -> dict[str, float]:
        """Fraction of free prunable weights: 'total' and one entry per tensor."""
        return self.ownership.free_capacity()

    def owner_maps(self) -> dict[str, torch.Tensor]:
        """A CPU copy of every owner map (uint8; 0 free, t owned by the t-th task)."""
        return {n: m.detach().cpu().clone() for n, m in self.ownership.maps.items()}

    def encode(self, tokens: torch.Tensor, weights: dict | None = None) -> torch.Tensor:
        return self.model.encode(tokens, weights)

    def user_vectors(self, sequences: torch.Tensor, weights: dict | None = None, kind: str = "item") -> torch.Tensor:
        return self.model.user_vectors(sequences, weights, kind)

    def drop_cache(self) -> None:
        """Forget cached per-task tensors and effective weights (e.g. before a deepcopy)."""
        self.model.drop_cache()
        self.ownership.invalidate()

    # ---- the stage machine -------------------------------------------------------------------
    def phase(self) -> Phase | None:
        """The newest task's phase (None before T1)."""
        return Phase.of(self.infos[-1]) if self.infos else None

    def _guard(self, step: str, task_name: str) -> TaskInfo | None:
        """Raise LineageError unless ``step`` of ``task_name`` is what the lineage allows next."""
        phase = self.phase()
        allowed = NEXT_STEP[phase] if phase else "train"
        last = self.infos[-1].name if self.infos else None
        if step == allowed and (step == "train" or task_name == last):
            return self.infos[-1] if step != "train" else None
        if allowed == "train":
            then = f"the next step is train of a new task (last task: {last!r}, settled)" if last else \
                "the next step is train of T1"
        else:
            then = f"the next step is {allowed}({last!r})"
        if step == "train" and allowed == "prune":
            then += f": prune and retrain {last!r} before learning {task_name!r}, or its weights would be overwritten"
        raise LineageError(f"cannot {step} task {task_name!r}: {then}.")

    @contextlib.contextmanager
    def _transition(self, step: str, task_name: str):
        """Guard ``step`` of ``task_name``; when its body succeeds, move the task to the step's phase.

        Yields the task's info (None for train: the body adds the task). A step that raises leaves
        the phase as it was.
        """
        info = self._guard(step, task_name)
        yield info
        AFTER[step].enter(info or self.infos[-1])

    def check_new_task(self, task: TaskData) -> None:
        """Raise LineageError / CapacityError unless ``task`` may be learned next."""
        self.model.check_task(task, T1_KIND)
        if self.infos and kind_of(task.kind).t1:
            later = [name for name, kind in KINDS.items() if not kind.t1]
            raise LineageError(f"task {task.name!r} is a {task.kind} task; only T1 may be one. Use a kind of {later}.")
        if len(self.infos) >= MAX_TASKS:
            raise CapacityError(f"a lineage holds at most {MAX_TASKS} tasks (one-byte owner maps).")
        self._guard("train", task.name)

    def train(self, task: TaskData, cfg: TrainConfig, progress: Progress | None = None) -> StageResult:
        """Stage 1 of a new task: all weights forward, gradients to free weights and the new head."""
        self.check_new_task(task)
        if self.infos:
            self.ownership.check_capacity(task.name, self.config.min_free)
        with self._transition("train", task.name):
            info = self.model.add_task(task, cfg)
            self.introduce_items(task, info)
            return run_stage(self.model, self.policy, task, info, "train", cfg, progress)

    def introduce_items(self, task: TaskData, info: TaskInfo) -> list[str]:
        """An item task's labels unknown to the catalogue become new embedding rows owned by it (``conure_core.catalogue``)."""
        if info.index == 1 or not kind_of(task.kind).ranks_items:
            return []
        new = introduced(info.vocab, {v for v in self.model.catalogue_ids() if v is not None})
        if new:
            slots = torch.full((len(info.vocab),), -1, dtype=torch.long)
            at = {str(v): p for p, v in enumerate(info.vocab)}
            slots[[at[v] for v in new]] = torch.arange(len(new))
            train = task.rows("train")
            rows = new_item_rows(self.params["embedding.weight"], self.num_items, task.sequences[train],
                                 task.labels[train], slots, len(new))
            self.grow(rows, info.index)
            info.new_items = new
        return new

    def grow(self, rows: torch.Tensor, owner: int) -> None:
        """Append item embedding rows owned by task ``owner`` (an owner map of the embedding grows with it)."""
        self.model.grow_embedding(rows)
        self.ownership.grow(self.params, owner)

    def prune(self, task_name: str, ratio: float, progress: Progress | None = None) -> dict[str, int]:
        """Stage 2: the task keeps the largest ``1 - ratio`` share of its free weights, per tensor."""
        with self._transition("prune", task_name) as info:
            kept = self.ownership.prune(self.params, info.index, ratio, zero_freed=self.config.freed_weights == "zero")
            info.prune_ratio = float(ratio)
        if progress:
            progress({"event": "prune", "task": task_name, "ratio": ratio, "kept": sum(kept.values()),
                      "free": self.free_capacity()["total"]})
        return kept

    def choose_prune_ratio(self, task: TaskData, cfg: TrainConfig, progress: Progress | None = None
                           ) -> tuple[float, list[dict]]:
        """The largest ratio of ``cfg.prune_grid`` whose pruned + retrained validation metric stays within
        ``cfg.prune_epsilon`` (relative) of the unpruned task's (Conure-), and the curve behind it.

        Each ratio is tried on a copy of the lineage (the copy's retrain is seeded as the real one, so the
        chosen ratio's trial is exactly what ``prune`` + ``retrain`` will give); none passing -> ``cfg.prune_ratio``.
        """
        info = self._guard("prune", task.name)
        with self.model.deep_only(info):  # as the trials' stages select: T1 on its TCN's own logits
            reference = self.model.evaluate(task, "valid", info, self.task_weights(info), cfg.eval_batch_size)[info.metric]
        self.drop_cache()
        curve = []
        for ratio in cfg.prune_grid:
            trial = copy.deepcopy(self)
            trial.prune(task.name, ratio)
            result = trial.retrain(task, cfg)
            curve.append({"ratio": ratio, "valid": result.best_valid, "free": trial.free_capacity()["total"]})
        kind = kind_of(info.kind)
        passing = [c["ratio"] for c in curve if kind.within(c["valid"], reference, cfg.prune_epsilon)]
        chosen = max(passing) if passing else cfg.prune_ratio
        if progress:
            progress({"event": "prune_choice", "task": task.name, "ratio": chosen, "reference": reference,
                      "epsilon": cfg.prune_epsilon, "curve": curve})
        return chosen, [{"reference": reference, **c} for c in curve]

    def retrain(self, task: TaskData, cfg: TrainConfig, progress: Progress | None = None) -> StageResult:
        """Stage 3: forward with owner in 1..k, gradients to the task's own weights (and head, after T1)."""
        with self._transition("retrain", task.name) as info:
            return run_stage(self.model, self.policy, task, info, "retrain", cfg, progress)

    def prune_choice(self, task: TaskData, cfg: TrainConfig, progress: Progress | None = None
                     ) -> tuple[float, list[dict]]:
        """The prune ratio of ``task`` and the validation curve behind it: chosen on validation with
        ``cfg.prune_auto`` (``choose_prune_ratio``), else ``cfg.prune_ratio`` (no curve)."""
        return self.choose_prune_ratio(task, cfg, progress) if cfg.prune_auto else (cfg.prune_ratio, [])

    def step(self, stage: str, task: TaskData, cfg: TrainConfig, progress: Progress | None = None) -> dict:
        """Run one stage (train | prune | retrain) of ``task``: the entry point every driver calls.

        Returns a JSON-safe result: the stage's ``StageResult.to_dict()``, or for prune the weights
        kept, the ratio, whether it was chosen on validation and the curve it was chosen on.
        """
        if stage == "train":
            return self.train(task, cfg, progress).to_dict()
        if stage == "prune":
            ratio, curve = self.prune_choice(task, cfg, progress)
            kept = self.prune(task.name, ratio, progress)
            return {"kept": int(sum(kept.values())), "ratio": ratio, "auto": cfg.prune_auto, "curve": curve}
        if stage == "retrain":
            return self.retrain(task, cfg, progress).to_dict()
        raise LineageError(f"stage {stage!r} is not a Conure stage; use one of {list(STAGES)}.")

    def learn(self, task: TaskData, cfg: TrainConfig, ratio: float | None = None, prune: bool = True,
              progress: Progress | None = None) -> list[StageResult]:
        """train -> prune -> retrain (or train only, leaving the task as Conure-, when ``prune`` is False).

        The ratio: ``ratio`` when given, else chosen on validation with ``cfg.prune_auto``, else ``cfg.prune_ratio``.
        """
        results = [self.train(task, cfg, progress)]
        if prune:
            results.append(self.settle(task, cfg, ratio, progress))
        return results

    def settle(self, task: TaskData, cfg: TrainConfig, ratio: float | None = None,
               progress: Progress | None = None) -> StageResult:
        """prune -> retrain of the newest (Conure-) task; the ratio as in ``learn``."""
        if ratio is None:
            ratio = self.prune_choice(task, cfg, progress)[0]
        self.prune(task.name, ratio, progress)
        return self.retrain(task, cfg, progress)
