"""The per-item ("wide") parts of a model, next to the TCN's low-rank ("deep") part.

A 32-256 wide state predicts the next item through a rank-C softmax; on ~750-900 users it learns
the popular items and little of the item-to-item transitions that a co-occurrence table stores
directly (docs/accuracy.md: the TCN alone reached 0.0189 T1 MRR@5 where co-occurrence reached 0.0361).
Two wide parts close that gap, each owned by one task's head, so retention stays exact:

- T1 (``ModelConfig.t1_wide="cooccur"``): a transition table fitted on T1's train split,
  ``table[i, j]`` = how many train users had item j after item i, over (holders of i + shrink);
  a prefix scores ``sum_t decay^(age_t) table[x_t]``, and the T1 head adds ``scale * that`` to the
  TCN's logits. Shrink and decay are chosen on T1's validation split when the table is fitted; the
  TCN trains and selects its epochs on its own logits (as NextItNet), and ``scale`` is chosen on
  validation after each of T1's stages (``SCALE``, 0 = the TCN alone).
- later tasks (``ModelConfig.user_repr`` or ``class_repr="mean_bag"``): the 0/1 bag of the user's T1 items appended
  to the pooled TCN state, so each head holds a weight per item and label (``bag_of_items``).
"""
from __future__ import annotations

import torch

from conure_core.metrics import MetricAccumulator, t1_target_mask, target_ranks

SHRINK = (1.0, 10.0, 100.0)
DECAY = (1.0, 0.8, 0.5)
# T1's fusion scale, chosen on validation after each T1 stage: 0 = the TCN alone; from ~1e4 on the
# table ranks (its scores differ by ~1e-3) and the TCN's logits and bias only break its ties.
SCALE = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 1000.0, 1e4, 1e5)


def bag_of_items(tokens: torch.Tensor, num_items: int) -> torch.Tensor:
    """0/1 bag [B, V] of each row's item tokens (1..V -> columns 0..V-1; pad and separator dropped, and
    items a later task introduced, tokens past the separator: the bag is of T1's items)."""
    bag = torch.zeros(tokens.shape[0], num_items + 2, device=tokens.device)
    bag.scatter_(1, tokens.long().clamp(max=num_items + 1), 1.0)
    return bag[:, 1:num_items + 1]


def transition_counts(sequences: torch.Tensor, num_items: int, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(counts [V+1, V+1] of ordered pairs i before j within a row, holders [V] = rows holding each item)."""
    counts = torch.zeros(num_items + 1, num_items + 1)
    length = sequences.shape[1]
    later = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
    for start in range(0, sequences.shape[0], chunk):  # chunks bound the [B, L, L] pair tensor
        s = sequences[start:start + chunk].long()
        keep = later & (s.unsqueeze(2) > 0) & (s.unsqueeze(1) > 0)
        a = s.unsqueeze(2).expand(-1, -1, length)[keep]
        b = s.unsqueeze(1).expand(-1, length, -1)[keep]
        counts.index_put_((a, b), torch.ones(a.numel()), accumulate=True)
    return counts, bag_of_items(sequences, num_items).sum(0)


def transition_table(counts: torch.Tensor, holders: torch.Tensor, shrink: float) -> torch.Tensor:
    """Table [V+2, V] indexed by token: row 0 (padding) and row V+1 (separator) are zero."""
    v = holders.numel()
    table = torch.zeros(v + 2, v)
    table[1:v + 1] = counts[1:, 1:] / (holders.unsqueeze(1) + shrink)
    return table


def decayed_scores(table: torch.Tensor, tokens: torch.Tensor, decay: float) -> torch.Tensor:
    """Wide scores [B, L, V]: position t holds ``sum_{s <= t} decay^(t - s) table[tokens[:, s]]``."""
    rows = table[tokens.long()]
    if decay == 1.0:
        return rows.cumsum(dim=1)
    out, state = [], torch.zeros_like(rows[:, 0])
    for t in range(rows.shape[1]):  # <= max_len steps, each vectorised over the batch and the items
        state = decay * state + rows[:, t]
        out.append(state)
    return torch.stack(out, dim=1)


def decayed_last(table: torch.Tensor, tokens: torch.Tensor, decay: float) -> torch.Tensor:
    """``decayed_scores(...)[:, -1]`` [B, V] without the [B, L, V] tensor: the decay-weighted bag @ table."""
    ages = decay ** torch.arange(tokens.shape[1] - 1, -1, -1, dtype=table.dtype, device=tokens.device)
    weights = torch.zeros(tokens.shape[0], table.shape[0], dtype=table.dtype, device=tokens.device)
    weights.scatter_add_(1, tokens.long(), ages.expand(tokens.shape[0], -1))
    return weights @ table  # row 0 of the table (padding) is zero, so padded positions add nothing


def table_mrr(table: torch.Tensor, sequences: torch.Tensor, decay: float, t1_targets: str = "all",
              chunk: int = 64) -> float:
    """MRR@5 of the table alone on T1 rows (the targets ``TaskModel.evaluate`` scores)."""
    acc = MetricAccumulator()
    for start in range(0, sequences.shape[0], chunk):
        seqs = sequences[start:start + chunk]
        keep = t1_target_mask(seqs, t1_targets)
        scores = decayed_scores(table, seqs[:, :-1], decay)[keep]
        acc.add_ranks(target_ranks(scores, seqs[:, 1:][keep] - 1))
    return acc.means()["mrr@5"]


def fit_transitions(train: torch.Tensor, valid: torch.Tensor, num_items: int, t1_targets: str = "all") -> dict:
    """The transition table of ``train`` rows with the shrink and decay of best validation MRR@5.

    Returns ``{"table", "shrink", "decay", "valid"}`` (``valid``: the table's own MRR@5).
    """
    counts, holders = transition_counts(train, num_items)
    best = None
    for shrink in SHRINK:
        table = transition_table(counts, holders, shrink)
        for decay in DECAY:
            mrr = table_mrr(table, valid, decay, t1_targets)
            if best is None or mrr > best[0]:
                best = (mrr, shrink, decay, table)
    mrr, shrink, decay, table = best
    return {"table": table, "shrink": shrink, "decay": decay, "valid": mrr}
