"""MTL (paper section 5.1): for each later task, one fresh backbone trained jointly on T1's loss and
that task's loss (two objectives, from scratch; "the only difference from SinMo is an additional T1
loss"). One backbone per (T1, Tk) pair."""
from __future__ import annotations

import dataclasses
import math

import torch

from conure_core.data.types import TaskData
from conure_core.seeding import stage_generator
from conure_core.strategies.common import BaselineStrategy, StrategyError
from conure_core.strategies.engine import OpenLineage
from conure_core.training import StageResult, run_stage


def joint_stage(model: OpenLineage, t1: TaskData, task: TaskData, cfg1, cfgk, progress=None) -> StageResult:
    """Train every parameter of ``model`` (both heads registered) on loss(Tk batch) + loss(T1 batch).

    Each Tk batch (``cfgk.batch_size`` rows, Tk's lr and epochs) is paired with a T1 batch drawn with
    replacement, sized so one Tk epoch also sees about one epoch of T1's training users. Validation
    and early stopping follow Tk's metric (T1 is the auxiliary objective).
    """
    info1, infok = model.info(t1.name), model.info(task.name)
    head1, headk = model.heads[t1.name], model.heads[task.name]
    generator = stage_generator(model.config.seed, infok.index, "mtl")
    params = list(model.params.values())
    for p in [*params, *head1.parameters(), *headk.parameters()]:
        p.requires_grad_(True)
    groups = [{"params": params, "weight_decay": 0.0, "lr": cfgk.lr * getattr(cfgk, "backbone_lr_scale", 1.0)},
              {"params": list(head1.parameters()), "weight_decay": 0.0},
              {"params": list(headk.parameters()), "weight_decay": cfgk.head_l2}]
    t1_train = t1.sequences[t1.rows("train")]
    rows = task.rows("train")
    # Both losses are the learner's (``Lineage.task_step``; the item loss follows cfgk.item_loss);
    # Tk's class loss here has no label smoothing or user dropout.
    step_k = model.task_step(task, infok, dataclasses.replace(cfgk, label_smoothing=0.0, user_dropout=0.0), generator)
    step_1 = model.task_step(t1, info1, cfg1, generator)
    steps = max(1, math.ceil(rows.numel() / cfgk.batch_size))
    t1_batch = max(cfg1.batch_size, math.ceil(t1_train.shape[0] / steps))
    emb, sep = model.params["embedding.weight"], model.num_items + 1

    def step(idx: torch.Tensor) -> torch.Tensor:
        loss_k = step_k(idx)
        pick = torch.randint(t1_train.shape[0], (t1_batch,), generator=generator)
        return loss_k + step_1(pick)

    def gate() -> None:
        if emb.grad is not None:
            emb.grad[sep].zero_()  # the separator's embedding never trains (as in the learner)

    def validate() -> tuple[float, float]:
        with torch.no_grad():
            m = model.evaluate_with(task, "valid", infok, None, cfgk.eval_batch_size)
            return m.get(infok.metric, float("nan")), m.get("loss", float("nan"))

    try:
        return run_stage(task=task.name, stage="mtl", param_groups=groups, num_rows=rows.numel(),
                         batch_size=cfgk.batch_size, epochs=cfgk.epochs, patience=cfgk.patience, lr=cfgk.lr,
                         generator=generator, step=step, validate=validate, metric=infok.metric, gate=gate,
                         progress=progress, keep_best=getattr(cfgk, "keep_best", True))
    finally:
        for p in [*params, *head1.parameters(), *headk.parameters()]:
            p.requires_grad_(False)
        model.ownership.invalidate()


class MTL(BaselineStrategy):
    """T1 alone first (a plain T1 model); then per task k a fresh model trained on T1 + Tk jointly.

    Task k is served by its pair model; T1 after task k is read from the newest pair model (each pair
    model is trained on T1 too), so MTL's T1 column shows what joint training leaves of T1.
    """

    name = "mtl"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.t1_task: TaskData | None = None
        self.t1_alone: OpenLineage | None = None
        self.pairs: dict[str, OpenLineage] = {}

    def learn(self, task: TaskData) -> None:
        if self.t1_task is None:
            self.t1_alone = self.t1_model(task)
            self.t1_task = task
        else:
            model = self.fresh()
            cfg1, cfgk = self.config(0, self.t1_task), self.config(len(self.learned), task)
            model.register(self.t1_task, cfg1)
            model.register(task, cfgk)
            joint_stage(model, self.t1_task, task, cfg1, cfgk, self.progress)
            self.pairs[task.name] = model
        self.learned.append(task.name)

    def model_for(self, task: TaskData) -> OpenLineage:
        if task.name == self.learned[0]:
            return list(self.pairs.values())[-1] if self.pairs else self.t1_alone
        if task.name not in self.pairs:
            raise StrategyError(f"mtl has no model for task {task.name!r}; learned: {self.learned}.")
        return self.pairs[task.name]

    def evaluate(self, task: TaskData, split: str = "test") -> dict[str, float]:
        self.check_learned(task)
        return self.model_for(task).evaluate(task, split)

    @property
    def num_backbones(self) -> int:
        return max(1, len(self.pairs))

    def storage_bytes(self) -> int:
        models = list(self.pairs.values()) or ([self.t1_alone] if self.t1_alone else [])
        return sum(m.storage_bytes() for m in models)
