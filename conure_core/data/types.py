"""The in-memory form of one prepared task, the only thing the learner reads.

Token ids of the T1 item vocabulary: 0 = padding, 1..V = items (``vocab[t - 1]`` is the
original id of token ``t``), V + 1 = the separator token appended for tasks after T1.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

TaskKind = Literal["sequence", "item", "class", "regression"]
SPLITS = ("train", "valid", "test")
TRAIN, VALID, TEST = 0, 1, 2


@dataclass
class TaskData:
    """One task's rows as tensors (CPU; the learner moves batches to its device).

    sequences: int64 [N, L] (int32 past 2^26 entries, see prepared.INT32_ENTRIES), each row a user's T1
        sequence, left-padded with 0, oldest first.
    labels: int64 [N] label ids 0..K-1 for item/class tasks, float32 [N] numbers for regression tasks;
        None for the sequence task (T1), whose target is the next item at every position.
    split: int8 [N] with TRAIN / VALID / TEST (80/5/15 by a seeded hash; by user for T1).
    user_ids: the original user id (as str) of each row.
    vocab: sequence task -> the T1 item vocabulary (len V); item/class task -> label vocabulary (len K).
    num_items: V, the size of the T1 item vocabulary (the embedding has V + 2 rows).
    digest: content digest of the prepared table this was loaded from ("" when built in memory).
    """

    name: str
    kind: TaskKind
    sequences: torch.Tensor
    labels: torch.Tensor | None
    split: torch.Tensor
    user_ids: list[str]
    vocab: list[str]
    num_items: int
    digest: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        """Output size of this task's head: V for the sequence task, K otherwise."""
        return self.num_items if self.kind == "sequence" else len(self.vocab)

    def rows(self, split: str | int) -> torch.Tensor:
        """Row indices of one split."""
        code = SPLITS.index(split) if isinstance(split, str) else split
        return torch.nonzero(self.split == code, as_tuple=False).flatten()

    @property
    def separator(self) -> int:
        return self.num_items + 1
