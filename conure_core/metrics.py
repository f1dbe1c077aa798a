"""Ranking and classification metrics (SPEC section 5): full ranking, batched, on the device."""
from __future__ import annotations

import math

import torch



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

    def add_errors(self, predicted: torch.Tensor, targets: torch.Tensor) -> None:
        """Accumulate squared and absolute errors of numeric predictions (means: ``mse``, ``mae``)."""
        err = (predicted.double() - targets.double())
        self.sums["mse"] = self.sums.get("mse", 0.0) + float((err * err).sum())
        self.sums["mae"] = self.sums.get("mae", 0.0) + float(err.abs().sum())
        self.count += int(targets.numel())

    def add_classes(self, predicted: torch.Tensor, targets: torch.Tensor) -> None:
        self.sums["accuracy"] = self.sums.get("accuracy", 0.0) + float((predicted == targets).sum())
        self.count += int(targets.numel())

    def means(self) -> dict[str, float]:
        if self.count == 0:
            return {name: float("nan") for name in self.sums}
        out = {name: value / self.count for name, value in self.sums.items()}
        out["count"] = float(self.count)
        return out


# ---- full ranking over large vocabularies, in chunks (never rows x items in memory) -------------
# ``TaskModel.evaluate`` / ``predict`` switch to these above FULL_SCORES elements of a score matrix;
# below it they score the whole matrix at once, as they always did.
FULL_SCORES = 1 << 27
CHUNK_SCORES = 1 << 24  # elements of one [rows x items] score block (64 MiB in fp32)


def _blocks(rows: int, items: int, budget: int) -> tuple[int, int]:
    """(row block, item block) sizes with row block x item block <= budget."""
    row_block = max(1, min(rows, 1024))
    return row_block, max(1, min(items, budget // row_block))


def streamed_ranking(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor,
                     budget: int = CHUNK_SCORES) -> tuple[torch.Tensor, float]:
    """(0-based ranks [N] as ``target_ranks`` defines them, summed cross-entropy) of ``h @ weight.T + bias``.

    Scores are made one [row block x item block] at a time: ranks are running integer counts (so
    exact), the cross-entropy a running log-sum-exp. Scores are ``h @ W.T + b`` as ``head.scores``
    makes them, and the target's own column is never counted as ahead of itself.
    """
    n, items = h.shape[0], weight.shape[0]
    ranks = torch.zeros(n, dtype=torch.int64, device=h.device)
    loss = 0.0
    row_block, item_block = _blocks(n, items, budget)
    for a in range(0, n, row_block):
        hb, yb = h[a:a + row_block], targets[a:a + row_block]
        # The target's score by the same matmul + add as every block's (the diagonal of hb @ W[y].T),
        # so an exact tie with another item stays an exact tie, as in the full matrix.
        ts = torch.diagonal(hb @ weight[yb].t()) + bias[yb]
        top = torch.full_like(ts, float("-inf"))
        sumexp = torch.zeros_like(ts)
        ahead = torch.zeros(hb.shape[0], dtype=torch.int64, device=h.device)
        for j in range(0, items, item_block):
            s = hb @ weight[j:j + item_block].t() + bias[j:j + item_block]
            t = ts.view(-1, 1)
            ahead += (s > t).sum(1)
            ties = s == t
            if bool(ties.any()):  # rare: equal scores rank the lower index first
                ties &= torch.arange(j, j + s.shape[1], device=h.device).view(1, -1) < yb.view(-1, 1)
                ahead += ties.sum(1)
            own = ((yb >= j) & (yb < j + s.shape[1])).nonzero().flatten()
            if own.numel():  # the target's own column is never ahead of itself
                ahead[own] -= (s[own, yb[own] - j] > ts[own]).long()
            new_top = torch.maximum(top, s.max(dim=1).values)
            sumexp = sumexp * torch.exp(top - new_top) + s.sub_(new_top.view(-1, 1)).exp_().sum(1)
            top = new_top
        ranks[a:a + row_block] = ahead
        loss += float((top + torch.log(sumexp) - ts).sum(dtype=torch.float64))
    return ranks, loss


def streamed_topk(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, k: int,
                  budget: int = CHUNK_SCORES) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k (indices, scores) of ``h @ weight.T + bias`` per row, merging a running top-k over item blocks."""
    n, items = h.shape[0], weight.shape[0]
    k = min(k, items)
    row_block, item_block = _blocks(n, items, budget)
    out_idx, out_val = [], []
    for a in range(0, n, row_block):
        hb = h[a:a + row_block]
        best_v = torch.empty(hb.shape[0], 0, device=h.device)
        best_i = torch.empty(hb.shape[0], 0, dtype=torch.int64, device=h.device)
        for j in range(0, items, item_block):
            s = hb @ weight[j:j + item_block].t() + bias[j:j + item_block]
            v, i = torch.topk(s, min(k, s.shape[1]), dim=1)
            # earlier blocks first, so equal scores keep the lower item index (as one topk would, mostly)
            cand_v, cand_i = torch.cat([best_v, v], 1), torch.cat([best_i, i + j], 1)
            best_v, pick = torch.topk(cand_v, min(k, cand_v.shape[1]), dim=1)
            best_i = cand_i.gather(1, pick)
        out_idx.append(best_i)
        out_val.append(best_v)
    return torch.cat(out_idx), torch.cat(out_val)
