"""Training losses (SPEC section 4)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from conure_core.heads import NextItemHead

# Above this many [targets x negatives] logits the sampled softmax runs in row chunks and recomputes
# them in backward (``SampledSoftmaxCE``): at 646K items x 20 % and 3K targets the plain form held
# ~10 GiB of logits and their temporaries. Below it the plain form is kept as it always was.
CHUNKED_LOGITS = 1 << 24
ROW_CHUNK_LOGITS = 1 << 23  # logits per row chunk of the chunked form (32 MiB in fp32)


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
    if h.shape[0] * m > CHUNKED_LOGITS:
        return SampledSoftmaxCE.apply(h, head.weight[y], head.bias[y], head.weight[negatives], head.bias[negatives],
                                      y, negatives)
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
    if head.bag is not None:  # the bag's items drop out as the dense bag's columns did
        slots = user[:, head.width:]
        kept = (torch.rand(slots.shape, generator=generator) >= dropout).to(h.device, h.dtype) / (1.0 - dropout)
        logits = logits + head.bag(slots, kept)
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


class SampledSoftmaxCE(torch.autograd.Function):
    """Mean cross-entropy of [positive, shared negatives] logits, memory-bounded.

    The same loss as the plain form in ``next_item_loss`` (accidental hits masked), computed over row
    chunks of ``ROW_CHUNK_LOGITS`` logits; backward recomputes each chunk's logits instead of keeping
    them, so memory is O(chunk x negatives) rather than O(targets x negatives).
    Inputs: h [N, C], pos_w [N, C] (= W[y]), pos_b [N], neg_w [M, C], neg_b [M], y [N], negatives [M].
    """

    @staticmethod
    def _chunks(n: int, m: int):
        step = max(1, ROW_CHUNK_LOGITS // max(m, 1))
        return [(s, min(s + step, n)) for s in range(0, n, step)]

    @staticmethod
    def _logits(h, pos_w, pos_b, neg_w, neg_b, y, negatives):
        pos = (h * pos_w).sum(-1) + pos_b
        neg = torch.addmm(neg_b, h, neg_w.t())
        return pos, neg.masked_fill_(negatives.view(1, -1) == y.view(-1, 1), float("-inf"))

    @staticmethod
    def forward(ctx, h, pos_w, pos_b, neg_w, neg_b, y, negatives):
        n, m = h.shape[0], neg_w.shape[0]
        lse = torch.empty(n, dtype=torch.float32, device=h.device)
        total = torch.zeros((), dtype=torch.float64, device=h.device)
        for a, b in SampledSoftmaxCE._chunks(n, m):
            pos, neg = SampledSoftmaxCE._logits(h[a:b], pos_w[a:b], pos_b[a:b], neg_w, neg_b, y[a:b], negatives)
            lse[a:b] = torch.logaddexp(pos, torch.logsumexp(neg, dim=1))
            total += (lse[a:b] - pos).sum(dtype=torch.float64)
        ctx.save_for_backward(h, pos_w, pos_b, neg_w, neg_b, y, negatives, lse)
        return (total / max(n, 1)).to(h.dtype)

    @staticmethod
    def backward(ctx, grad):
        h, pos_w, pos_b, neg_w, neg_b, y, negatives, lse = ctx.saved_tensors
        n = h.shape[0]
        scale = grad.to(h.dtype) / max(n, 1)
        g_h, g_pos_w = torch.empty_like(h), torch.empty_like(pos_w)
        g_pos_b = torch.empty_like(pos_b)
        g_neg_w, g_neg_b = torch.zeros_like(neg_w), torch.zeros_like(neg_b)
        for a, b in SampledSoftmaxCE._chunks(n, neg_w.shape[0]):
            pos, neg = SampledSoftmaxCE._logits(h[a:b], pos_w[a:b], pos_b[a:b], neg_w, neg_b, y[a:b], negatives)
            d_neg = torch.exp_(neg.sub_(lse[a:b].view(-1, 1))).mul_(scale)  # softmax share of each negative
            d_pos = (torch.exp(pos - lse[a:b]) - 1.0) * scale
            g_h[a:b] = torch.addmm(d_pos.view(-1, 1) * pos_w[a:b], d_neg, neg_w)
            g_pos_w[a:b] = d_pos.view(-1, 1) * h[a:b]
            g_pos_b[a:b] = d_pos
            g_neg_w.addmm_(d_neg.t(), h[a:b])
            g_neg_b += d_neg.sum(0)
        return g_h, g_pos_w, g_pos_b, g_neg_w, g_neg_b, None, None
