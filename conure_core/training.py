"""The stage runner: one training loop, read top-down, for every strategy and stage."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import torch

from conure_core.config import TrainConfig
from conure_core.data.types import TaskData
from conure_core.distributed import StageSync
from conure_core.kinds import kind_of
from conure_core.seeding import stage_generator

if TYPE_CHECKING:
    from conure_core.model import TaskInfo, TaskModel
    from conure_core.policies import ParameterPolicy

Progress = Callable[[dict], None]
BATCH_EVENT_S = 1.0  # least seconds between two "batch" progress events inside an epoch


@dataclass
class StageResult:
    """What a stage did; ``history`` holds one dict per epoch (epoch 0 = before any update)."""

    task: str
    stage: str
    best_epoch: int
    best_valid: float
    metric: str
    epochs_run: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    wide: dict | None = None  # T1 with a wide part: its fit and fusion scale (TaskModel.fit_wide_scale)

    def to_dict(self) -> dict:
        return {"task": self.task, "stage": self.stage, "best_epoch": self.best_epoch,
                "best_valid": self.best_valid, "metric": self.metric, "epochs_run": self.epochs_run,
                "seconds": self.seconds, "history": list(self.history), "wide": self.wide}


def run_stage(model: "TaskModel", policy: "ParameterPolicy", task: TaskData, info: "TaskInfo", stage: str,
              cfg: TrainConfig, progress: Progress | None = None, make_loss=None) -> StageResult:
    """Train one stage of ``info``'s task: fresh Adam, seeded shuffles, early stopping, best epoch kept.

    ``policy`` says which parameters move, what the forward reads and how gradients are gated;
    ``make_loss(generator)`` (default: the task's own, ``model.loss``) gives the batch loss
    ``loss(rows, weights)`` and an epoch's row order ``loss.order(generator)``.
    The weights of the best validation epoch (epoch 0 included: a stage never makes things worse on
    validation) are restored at the end; ``cfg.select`` says what "best" means (``Selection``).
    Inside a torch.distributed process group of several ranks the stage is data-parallel
    (``conure_core.distributed``: sharded batches, gradients averaged before the gate).
    """
    started = time.perf_counter()
    generator = stage_generator(model.config.seed, info.index, stage)
    epochs = cfg.stage_epochs.get(stage, cfg.epochs)
    sync = StageSync.current()  # None on one process: the loop below is then the single-process one
    with policy.reading(info), model.deep_only(info):
        groups = policy.param_groups(model, info, stage, cfg)
        params = [p for g in groups for p in g["params"]]
        loss_gen = sync.loss_generator(model.config.seed, info.index, stage) if sync else generator
        loss = make_loss(loss_gen) if make_loss else model.loss(task, info, cfg, loss_gen)
        policy.begin_stage(model, info, stage)
        try:
            @torch.no_grad()
            def validate() -> tuple[float, float]:
                if sync and not sync.is_main:
                    return sync.broadcast_floats((float("nan"), float("nan")))
                m = model.evaluate(task, "valid", info, policy.stage_weights(model, info, stage), cfg.eval_batch_size)
                found = m.get(info.metric, float("nan")), m.get("loss", float("nan"))
                return sync.broadcast_floats(found) if sync else found

            optimiser = torch.optim.Adam(groups, lr=cfg.lr) if params else None
            per_epoch = -(-loss.num_rows // cfg.batch_size)
            scheduler = Schedule(optimiser, cfg.lr_schedule, epochs * per_epoch)
            model.seed_dropout(info, stage)
            best = Selection(cfg.select, validate(), params, kind_of(info.kind).higher_is_better)
            history = [best.record(task.name, stage, 0, None, info.metric)]
            _report(progress, history[-1])
            for epoch in range(1, epochs + 1):
                if optimiser is None or loss.num_rows == 0:
                    break
                rows = loss.order(generator)
                total, batches = 0.0, 0
                next_event = time.perf_counter() + BATCH_EVENT_S
                with model.dropout_mode(info):
                    for start in range(0, loss.num_rows, cfg.batch_size):
                        optimiser.zero_grad(set_to_none=True)
                        if sync:
                            total += _parallel_step(sync, loss, rows[start:start + cfg.batch_size], params,
                                                    policy.stage_weights(model, info, stage))
                        else:
                            value = loss(rows[start:start + cfg.batch_size], policy.stage_weights(model, info, stage))
                            value.backward()
                            total += float(value.detach())
                        policy.gate(model)
                        model.zero_reserved_grads()
                        optimiser.step()
                        batches += 1
                        scheduler.step((epoch - 1) * per_epoch + batches)
                        if progress and time.perf_counter() >= next_event:  # a long epoch shows its progress
                            next_event = time.perf_counter() + BATCH_EVENT_S
                            _report(progress, {"event": "batch", "task": task.name, "stage": stage, "epoch": epoch,
                                               "done": min(start + cfg.batch_size, loss.num_rows),
                                               "rows": loss.num_rows})
                current = validate()
                mean_loss = total / max(batches, 1)
                if sync:
                    mean_loss = sync.mean(mean_loss, 1)
                history.append(Selection.entry(task.name, stage, epoch, mean_loss, current, info.metric))
                _report(progress, history[-1])
                if not cfg.keep_best:
                    best.keep(current, epoch)
                elif not best.offer(current, epoch) and epoch - best.epoch >= cfg.patience:
                    break
            best.restore(epochs_run=len(history) - 1)
        finally:
            policy.end_stage()
            for p in [*model.params.values(), *(q for h in model.heads.values() for q in h.parameters()),
                      *policy.extra_params(info, stage)]:
                p.requires_grad_(False)
    with policy.reading(info):  # T1 with a wide part: its fusion scale, on validation, for the kept epoch
        wide = model.fit_wide_scale(task, info, policy.stage_weights(model, info, stage), cfg.eval_batch_size)
    result = StageResult(task.name, stage, best.epoch, best.valid[0], info.metric, len(history) - 1,
                         time.perf_counter() - started, history, wide)
    end = {"event": "stage_end", "task": task.name, "stage": stage, "best_epoch": best.epoch,
           "valid": best.valid[0], "valid_loss": best.valid[1], "select": cfg.select,
           "metric": info.metric, "epochs_run": result.epochs_run, "seconds": result.seconds}
    if wide:
        end["wide"] = wide
    _report(progress, end)
    return result


def _parallel_step(sync: StageSync, loss, batch_rows: torch.Tensor, params: list[torch.Tensor], weights) -> float:
    """Forward + backward of this rank's shard of a global batch, then the cross-rank gradient mean.

    Each rank's gradient is weighted by how many terms its loss averages (``loss.count``, rows when
    the loss has none), so the mean is the global batch's. Returns this rank's share of the batch loss
    times the world size (the epoch's mean over ranks is then the mean of the global batches' losses).
    """
    mine = sync.shard(batch_rows)
    count = (loss.count(mine) if hasattr(loss, "count") else int(mine.numel())) if mine.numel() else 0
    value = 0.0
    if count:
        out = loss(mine, weights)
        out.backward()
        value = float(out.detach()) * count
    total = sync.average_grads(params, count)
    return value * sync.world / total if total else 0.0


def _report(progress: Progress | None, event: dict) -> None:
    if progress:
        progress(dict(event))


class Schedule:
    """A stage's learning rate: "constant", or "cosine" (from the groups' rates down to 0 over the
    stage's epochs; early stopping may end the stage before the bottom)."""

    def __init__(self, optimiser: torch.optim.Optimizer | None, kind: str, total_steps: int) -> None:
        self.optimiser, self.kind, self.total = optimiser, kind, max(total_steps, 1)
        self.base = [g["lr"] for g in optimiser.param_groups] if optimiser else []

    def step(self, done: int) -> None:
        """Set the rates for the step after ``done`` steps."""
        if self.kind == "constant" or self.optimiser is None:
            return
        factor = 0.5 * (1.0 + math.cos(math.pi * min(done, self.total) / self.total))
        for group, base in zip(self.optimiser.param_groups, self.base):
            group["lr"] = base * factor


class Selection:
    """The best epoch so far and a copy of its weights.

    ``select="metric"``: the best validation metric wins (the highest, or the lowest when not
    ``higher``), ties (common with ~50 validation users) go to the lower validation loss; ``"loss"``: the lowest validation cross-entropy wins (far less
    noisy than accuracy on small validation sets).
    """

    def __init__(self, select: str, valid: tuple[float, float], params: list[torch.Tensor], higher: bool = True) -> None:
        if select not in ("metric", "loss"):
            raise ValueError(f"select={select!r}; use 'metric' or 'loss'.")
        self.select, self.params, self.higher = select, params, higher
        self.valid, self.epoch, self.saved = valid, 0, self._snapshot()

    def _snapshot(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.params]

    def better(self, a: tuple[float, float]) -> bool:
        b = self.valid
        if self.select == "loss":
            return not math.isnan(a[1]) if math.isnan(b[1]) else a[1] < b[1]
        if math.isnan(b[0]):
            return not math.isnan(a[0])
        return (a[0] > b[0] if self.higher else a[0] < b[0]) or (a[0] == b[0] and a[1] < b[1])

    def offer(self, valid: tuple[float, float], epoch: int) -> bool:
        """Keep ``epoch`` if it beats the best so far; True when it did."""
        if not self.better(valid):
            return False
        self.keep(valid, epoch)
        return True

    def keep(self, valid: tuple[float, float], epoch: int) -> None:
        """Make ``epoch`` the kept one, better or not (``keep_best=False``: the last epoch wins)."""
        self.valid, self.epoch, self.saved = valid, epoch, self._snapshot()

    @torch.no_grad()
    def restore(self, epochs_run: int) -> None:
        """Copy the best epoch's weights back (nothing to do when the last epoch was the best)."""
        if self.epoch != epochs_run:
            for p, saved in zip(self.params, self.saved):
                p.copy_(saved)

    def record(self, task: str, stage: str, epoch: int, loss: float | None, metric: str) -> dict:
        return self.entry(task, stage, epoch, loss, self.valid, metric)

    @staticmethod
    def entry(task: str, stage: str, epoch: int, loss: float | None, valid: tuple[float, float], metric: str) -> dict:
        return {"event": "epoch", "task": task, "stage": stage, "epoch": epoch, "loss": loss,
                "valid": valid[0], "valid_loss": valid[1], "metric": metric}
