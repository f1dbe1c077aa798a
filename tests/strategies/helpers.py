"""Tiny real subsets of the bundled MovieLens-100K tasks and a tiny preset, for fast strategy tests."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from conure_core.config import ModelConfig, Preset, TrainConfig
from conure_core.data.types import TEST, TRAIN, VALID, TaskData


def subset(task: TaskData, users: set[str], max_rows: int | None = None) -> TaskData:
    """The rows of ``task`` whose user is in ``users`` (first ``max_rows``), same vocabularies.

    Rows are re-split 60/20/20 (row index mod 5) so a tiny subset still has a validation split large
    enough for early stopping to see progress (with a 5% split it often keeps the untrained epoch 0).
    """
    keep = torch.tensor([u in users for u in task.user_ids], dtype=torch.bool)
    idx = torch.nonzero(keep).flatten()
    if max_rows is not None:
        idx = idx[:max_rows]
    pos = torch.arange(idx.numel()) % 5
    split = torch.where(pos == 0, VALID, torch.where(pos == 1, TEST, TRAIN)).to(torch.int8)
    return dataclasses.replace(
        task, sequences=task.sequences[idx], labels=None if task.labels is None else task.labels[idx],
        split=split, user_ids=[task.user_ids[i] for i in idx.tolist()], meta=dict(task.meta))


def tiny_tasks(root: Path, num_users: int = 300, max_rows: int = 3000) -> list[TaskData]:
    """All six bundled tasks restricted to the first ``num_users`` T1 users."""
    from conure_core.run import bundled_tasks

    tasks, _ = bundled_tasks(root)
    users = set(tasks[0].user_ids[:num_users])
    return [subset(t, users, max_rows) for t in tasks]


def tiny_preset(backbone: str = "tcn", epochs: int = 2) -> Preset:
    """A width-16 model and 1-2 epoch stages: seconds per task on 2 cores.

    ``keep_best=False``: a stage keeps its last epoch, so tests that check which weights moved do not
    depend on whether a noisy tiny validation split happened to prefer the untrained epoch 0.
    """
    model = ModelConfig(width=16, dilations=[1, 2], backbone=backbone)
    return Preset(name="tiny", model=model,
                  first=TrainConfig(lr=1e-2, batch_size=64, epochs=epochs, retrain_epochs=1, patience=2, keep_best=False),
                  later=TrainConfig(lr=1e-2, batch_size=256, epochs=epochs, retrain_epochs=1, patience=2, keep_best=False),
                  prune_ratios=[0.5])
