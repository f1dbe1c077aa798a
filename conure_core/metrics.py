"""Ranking and classification metrics (SPEC section 5): full ranking, batched, on the device."""
from __future__ import annotations

import math

import torch

METRIC_OF_KIND = {"sequence": "mrr@5", "item": "mrr@5", "class": "accuracy"}


def t1_target_mask(sequences: torch.Tensor, mode: str = "all") -> torch.Tensor:
    """Bool [B, L-1]: which next-item targets ``sequences[:, 1:]`` of left-padded T1 rows are scored.

    "all": every real target with at least one real item before it; "last": the final item only.
    """
    keep = (sequences[:, 1:] > 0) & (sequences[:, :-1] > 0)
    if mode == "last":
        keep = keep & (torch.arange(keep.shape[1], device=keep.device) == keep.shape[1] - 1)
    return keep


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target among all candidates of its row.

    Ties rank the lower index first (as a stable sort would), so constant scores earn no credit
    for free beyond the index order; scores [B, K], targets [B] -> int64 [B].
    """
    target_scores = scores.gather(1, targets.view(-1, 1))
    index = torch.arange(scores.shape[1], device=scores.device).view(1, -1)
    ahead = (scores > target_scores) | ((scores == target_scores) & (index < targets.view(-1, 1)))
    return ahead.sum(dim=1)


def ranking_sums(ranks: torch.Tensor, k: int = 5) -> dict[str, float]:
    """Sums (not means) of MRR@k, HR@k and NDCG@k over the given ranks, for batched accumulation."""
    hit = ranks < k
    r = ranks.double()
    return {
        f"mrr@{k}": float(torch.where(hit, 1.0 / (r + 1.0), 0.0).sum()),
        f"hr@{k}": float(hit.sum()),
        f"ndcg@{k}": float(torch.where(hit, math.log(2.0) / torch.log(r + 2.0), 0.0).sum()),
    }


class MetricAccumulator:
    """Adds per-batch metric sums and returns means over all rows seen."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add_loss(self, scores: torch.Tensor, targets: torch.Tensor) -> None:
        """Accumulate softmax cross-entropy (a smooth tie-breaker for model selection); call before add_*."""
        loss = torch.nn.functional.cross_entropy(scores.float(), targets, reduction="sum")
        self.sums["loss"] = self.sums.get("loss", 0.0) + float(loss)

    def add_ranks(self, ranks: torch.Tensor, k: int = 5) -> None:
        for name, value in ranking_sums(ranks, k).items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.count += int(ranks.numel())

    def add_classes(self, predicted: torch.Tensor, targets: torch.Tensor) -> None:
        self.sums["accuracy"] = self.sums.get("accuracy", 0.0) + float((predicted == targets).sum())
        self.count += int(targets.numel())

    def means(self) -> dict[str, float]:
        if self.count == 0:
            return {name: float("nan") for name in self.sums}
        out = {name: value / self.count for name, value in self.sums.items()}
        out["count"] = float(self.count)
        return out
