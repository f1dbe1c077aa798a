"""One training stage: fresh Adam, seeded shuffles, early stopping, best-validation weights kept."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

Progress = Callable[[dict], None]


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

    def to_dict(self) -> dict:
        return {"task": self.task, "stage": self.stage, "best_epoch": self.best_epoch,
                "best_valid": self.best_valid, "metric": self.metric, "epochs_run": self.epochs_run,
                "seconds": self.seconds, "history": list(self.history)}


def grouped_order(row_users: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A permutation of rows that keeps each user's rows together (users and rows within a user shuffled).

    Every row is still seen once per epoch and batches keep their row count, but a batch of 512
    rows then holds ~15 users instead of ~400, so the backbone encodes ~25x fewer sequences per epoch.
    """
    num_users = int(row_users.max()) + 1 if row_users.numel() else 0
    user_pos = torch.randperm(num_users, generator=generator).double()
    within = torch.rand(row_users.numel(), generator=generator, dtype=torch.float64)
    return torch.argsort(user_pos[row_users] + 0.5 * within, stable=True)


def run_stage(*, task: str, stage: str, param_groups: list[dict], num_rows: int, batch_size: int,
              epochs: int, patience: int, lr: float, generator: torch.Generator,
              step: Callable[[torch.Tensor], torch.Tensor], validate: Callable[[], float], metric: str,
              gate: Callable[[], None] | None = None, progress: Progress | None = None,
              keep_best: bool = True, order: Callable[[torch.Generator], torch.Tensor] | None = None,
              select: str = "metric") -> StageResult:
    """Train ``param_groups`` for up to ``epochs`` epochs over ``num_rows`` rows.

    ``step(row_indices)`` returns the batch loss; ``gate()`` runs between backward and the optimiser
    step (ownership gating); ``validate()`` returns the validation metric (higher is better).
    The weights of the best validation epoch (epoch 0 included: a stage never makes things worse on
    validation) are restored at the end. The optimiser is fresh: no state crosses stages.
    ``select``: "metric" = highest validation metric wins (ties: lower validation loss); "loss" = lowest
    validation loss wins (cross-entropy: far less noisy than accuracy on ~50 validation users).
    """
    if select not in ("metric", "loss"):
        raise ValueError(f"select={select!r}; use 'metric' or 'loss'.")
    started = time.perf_counter()
    params = [p for g in param_groups for p in g["params"]]
    optimiser = torch.optim.Adam(param_groups, lr=lr) if params else None

    def snapshot() -> list[torch.Tensor]:
        return [p.detach().clone() for p in params]

    def measure() -> tuple[float, float]:
        out = validate()
        return (out, float("nan")) if isinstance(out, (int, float)) else (float(out[0]), float(out[1]))

    def better(a: tuple[float, float], b: tuple[float, float]) -> bool:
        if select == "loss":
            if math.isnan(b[1]):
                return not math.isnan(a[1])
            return a[1] < b[1]
        # Higher metric wins; on a tie (common with ~50 validation users) the lower validation loss.
        if math.isnan(b[0]):
            return not math.isnan(a[0])
        return a[0] > b[0] or (a[0] == b[0] and a[1] < b[1])

    best = measure()
    best_valid = best[0]
    best_state, best_epoch, bad = snapshot(), 0, 0
    history = [{"event": "epoch", "task": task, "stage": stage, "epoch": 0, "loss": None,
                "valid": best_valid, "valid_loss": best[1], "metric": metric}]
    if progress:
        progress(dict(history[0]))
    epochs_run = 0
    for epoch in range(1, epochs + 1):
        if optimiser is None or num_rows == 0:
            break
        rows = order(generator) if order is not None else torch.randperm(num_rows, generator=generator)
        total, batches = 0.0, 0
        for start in range(0, num_rows, batch_size):
            optimiser.zero_grad(set_to_none=True)
            loss = step(rows[start:start + batch_size])
            loss.backward()
            if gate is not None:
                gate()
            optimiser.step()
            total += float(loss.detach())
            batches += 1
        epochs_run = epoch
        current = measure()
        valid = current[0]
        record = {"event": "epoch", "task": task, "stage": stage, "epoch": epoch,
                  "loss": total / max(batches, 1), "valid": valid, "valid_loss": current[1], "metric": metric}
        history.append(record)
        if progress:
            progress(dict(record))
        if not keep_best or better(current, best):
            best, best_valid, best_state, best_epoch, bad = current, valid, snapshot(), epoch, 0
        else:
            bad += 1
            if bad >= patience:
                break
    if best_epoch != epochs_run:
        with torch.no_grad():
            for p, saved in zip(params, best_state):
                p.copy_(saved)
    result = StageResult(task, stage, best_epoch, best_valid, metric, epochs_run,
                         time.perf_counter() - started, history)
    if progress:
        progress({"event": "stage_end", "task": task, "stage": stage, "best_epoch": best_epoch,
                  "valid": best_valid, "valid_loss": best[1], "select": select, "metric": metric,
                  "epochs_run": epochs_run, "seconds": result.seconds})
    return result
