"""Non-personalised reference scores each task must beat: most-popular and majority-class."""
from __future__ import annotations

import torch

from conure_core.data.types import TaskData
from conure_core.metrics import MetricAccumulator, t1_target_mask, target_ranks


def label_counts(task: TaskData, split: str = "train") -> torch.Tensor:
    """Frequency of every label (item tasks, classes) or T1 item (sequence task) in one split."""
    rows = task.rows(split)
    if task.kind == "sequence":
        tokens = task.sequences[rows].flatten()
        return torch.bincount(tokens[tokens > 0] - 1, minlength=task.num_items)[: task.num_items]
    return torch.bincount(task.labels[rows], minlength=task.num_labels)[: task.num_labels]


def naive_baseline(task: TaskData, split: str = "test", t1_targets: str = "all") -> tuple[str, dict[str, float]]:
    """('popularity' | 'majority', metrics) on ``split``, counting the TRAIN split only.

    The sequence task scores the same next-item targets as ``Lineage.evaluate`` (``t1_targets``).
    """
    scores = label_counts(task, "train").double()
    rows = task.rows(split)
    acc = MetricAccumulator()
    if task.kind == "class":
        targets = task.labels[rows]
        acc.add_classes(torch.full_like(targets, int(scores.argmax())), targets)
        return "majority", acc.means()
    if task.kind == "sequence":
        seqs = task.sequences[rows]
        targets = seqs[:, 1:][t1_target_mask(seqs, t1_targets)] - 1
    else:
        targets = task.labels[rows]
    acc.add_ranks(target_ranks(scores.expand(targets.numel(), -1), targets))
    return "popularity", acc.means()
