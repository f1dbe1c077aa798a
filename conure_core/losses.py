"""Training losses (SPEC section 4)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from conure_core.heads import NextItemHead


def next_item_loss(hidden: torch.Tensor, targets: torch.Tensor, head: NextItemHead,
                   sampled_fraction: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean next-item cross-entropy over the NON-padding targets (the authors' code counted padding).

    hidden [B, L, C]; targets [B, L] token ids (0 = pad, t -> output column t - 1). With
    ``sampled_fraction`` < 1, a shared uniform sample of that share of the vocabulary serves as the
    negatives of every position (accidental hits masked); the uniform proposal needs no logQ correction.
    """
    keep = targets > 0
    h = hidden[keep]
    y = targets[keep] - 1
    num_labels = head.weight.shape[0]
    if sampled_fraction >= 1.0:
        return F.cross_entropy(head.scores(h), y)
    m = max(1, int(round(sampled_fraction * num_labels)))
    negatives = torch.randperm(num_labels, generator=generator)[:m].to(h.device)
    pos = (h * head.weight[y]).sum(-1, keepdim=True) + head.bias[y].unsqueeze(1)
    neg = h @ head.weight[negatives].t() + head.bias[negatives]
    neg = neg.masked_fill(negatives.view(1, -1) == y.view(-1, 1), float("-inf"))
    logits = torch.cat([pos, neg], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(y))


def bpr_loss(user: torch.Tensor, head: NextItemHead, positives: torch.Tensor,
             negatives: torch.Tensor, log_q: torch.Tensor | None = None) -> torch.Tensor:
    """BPR: -log sigmoid(s(u, pos) - s(u, neg)), one negative per positive; user [B, C].

    ``log_q`` (log sampling probability per item id) applies the logQ correction: scores become
    s - log q, i.e. a two-candidate sampled softmax whose optimum ranks items by p(item | user),
    which full-ranking MRR measures; plain BPR under a popularity sampler under-ranks popular items.
    """
    ids = torch.stack([positives, negatives], dim=1)
    s = head.pair_scores(user, ids)
    if log_q is not None:
        s = s - log_q[ids]
    return -F.logsigmoid(s[:, 0] - s[:, 1]).mean()


def class_loss(user: torch.Tensor, head: NextItemHead, labels: torch.Tensor, label_smoothing: float = 0.0,
               dropout: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Softmax cross-entropy over the task's classes.

    ``dropout``: inverted dropout on the (head-normalised) user vector, the mask drawn on the CPU from
    ``generator`` so a stage replays bit-identically; ``label_smoothing`` as in ``F.cross_entropy``.
    """
    if dropout <= 0.0:
        return F.cross_entropy(head.scores(user), labels, label_smoothing=label_smoothing)
    h = head._prep(user)
    keep = (torch.rand(h.shape, generator=generator) >= dropout).to(h.device, h.dtype) / (1.0 - dropout)
    logits = (h * keep) @ head.weight.t() + head.bias
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
