"""Negative samplers for item tasks (SPEC section 4)."""
from __future__ import annotations

import torch


class PopularitySampler:
    """p(item) ~ exp(-(rank + 1) / (alpha * K)), rank 0 = most frequent label in the TRAIN split.

    ``probs`` is indexed BY ITEM (label) ID, not by frequency order (the authors' code indexed it by
    dict order, a silent bug under Python 3). Equal counts rank by lower id, so the table is deterministic.
    """

    def __init__(self, train_labels: torch.Tensor, num_labels: int, alpha: float = 0.3) -> None:
        counts = torch.bincount(train_labels.long().cpu(), minlength=num_labels)[:num_labels]
        order = torch.argsort(-counts, stable=True)
        rank = torch.empty(num_labels, dtype=torch.float64)
        rank[order] = torch.arange(num_labels, dtype=torch.float64)
        weights = torch.exp(-(rank + 1.0) / (alpha * num_labels))
        self.counts = counts
        self.rank = rank.long()
        self.probs = weights / weights.sum()

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` item ids (int64, CPU), drawn with replacement."""
        return torch.multinomial(self.probs, n, replacement=True, generator=generator)
