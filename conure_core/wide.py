"""The per-item ("wide") parts of a model, next to the TCN's low-rank ("deep") part.

A 32-256 wide state predicts the next item through a rank-C softmax; on ~750-900 users it learns
the popular items and little of the item-to-item transitions that a co-occurrence table stores
directly (docs/accuracy.md: the TCN alone reached 0.0189 T1 MRR@5 where co-occurrence reached 0.0361).
Two wide parts close that gap, each owned by one task's head, so retention stays exact:

- T1 (``ModelConfig.t1_wide="cooccur"``): a sparse transition table fitted on T1's train split,
  ``table[i, j]`` = how many train users had item j after item i, over (holders of i + shrink), of
  which each item keeps its ``k`` largest successors (``TransitionTable``: [V+2, k] columns and
  values, never a dense V x V); a prefix scores ``sum_t decay^(age_t) table[x_t]``, and the T1 head
  adds ``scale * that`` to the TCN's logits. Shrink, decay and k are chosen on T1's validation split
  when the table is fitted; the TCN trains and selects its epochs on its own logits (as NextItNet),
  and ``scale`` is chosen on validation after each of T1's stages (``SCALE``, 0 = the TCN alone).
- later tasks (``ModelConfig.user_repr`` or ``class_repr="mean_bag"``): the 0/1 bag of the user's T1
  items next to the pooled TCN state, so each head holds a weight per item and label (``ItemBag``).
  The bag travels as the user's distinct item tokens (``bag_slots``), never as a [users, V] matrix.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from conure_core.metrics import FULL_SCORES, MetricAccumulator, t1_target_mask, target_ranks

SHRINK = (1.0, 10.0, 100.0)
DECAY = (1.0, 0.8, 0.5)
# Successors kept per item: the smallest k whose validation MRR@5 is within K_EPSILON (relative) of
# the best k's; on ~900 validation targets the curve is flat within noise (docs/accuracy.md) and a
# smaller table is what a saved state stores.
TOPK = (20, 50, 100, 200)
K_EPSILON = 0.02
# A candidate k whose [V+2, k] columns and values would pass this many bytes is not tried (1M items: k <= 50).
TABLE_BYTES = 1 << 29
# T1's fusion scale, chosen on validation after each T1 stage: 0 = the TCN alone; from ~1e4 on the
# table ranks (its scores differ by ~1e-3) and the TCN's logits and bias only break its ties.
SCALE = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 1000.0, 1e4, 1e5)
# Ordered pairs held at once while the table is counted (int64 pairs: ~16 bytes each, ~0.25 GiB), and
# (target, successor) entries at once while validation targets are ranked from sparse scores.
PAIR_BUDGET = 1 << 24
ENTRY_BUDGET = 1 << 22


def bag_of_items(tokens: torch.Tensor, num_items: int) -> torch.Tensor:
    """0/1 bag [B, V] of each row's item tokens (1..V -> columns 0..V-1; pad and separator dropped, and
    items a later task introduced, tokens past the separator: the bag is of T1's items)."""
    bag = torch.zeros(tokens.shape[0], num_items + 2, device=tokens.device)
    bag.scatter_(1, tokens.long().clamp(max=num_items + 1), 1.0)
    return bag[:, 1:num_items + 1]


def bag_slots(tokens: torch.Tensor, num_items: int) -> torch.Tensor:
    """Each row's distinct item tokens [B, L] (float, so they ride in the user vector; exact below 2^24
    items), 0 in the other slots: the sparse form of ``bag_of_items`` that ``ItemBag`` reads."""
    s = tokens.long().sort(dim=1).values
    repeat = torch.zeros_like(s, dtype=torch.bool)
    repeat[:, 1:] = s[:, 1:] == s[:, :-1]
    return s.masked_fill(repeat | (s > num_items), 0).float()


class ItemBag(nn.Module):
    """A weight per T1 item and label, summed over a user's bag: ``bag_of_items(x) @ W`` from slots.

    ``weight`` [V+1, K]: row 0 is the empty slot (zero, no gradient), row t item token t; it starts
    at zero (a logistic regression fitted from zeros). Cost per user: its items, not the vocabulary.
    """

    def __init__(self, num_items: int, num_labels: int) -> None:
        super().__init__()
        if num_items >= 1 << 24:
            raise ValueError(f"a bag of {num_items} T1 items: its slots ride in float32 user vectors, exact up to "
                             f"{(1 << 24) - 1} items; use user_repr / class_repr 'mean' for this vocabulary.")
        self.weight = nn.Parameter(torch.zeros(num_items + 1, num_labels))

    def forward(self, slots: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, K] of ``bag_slots`` rows [B, M]; ``keep`` [B, M]: per-slot weights (dropout)."""
        return F.embedding_bag(slots.long(), self.weight, mode="sum", padding_idx=0, per_sample_weights=keep)


def item_holders(sequences: torch.Tensor, num_items: int) -> torch.Tensor:
    """Rows holding each item [V] (float), without a [rows, V] bag."""
    s = sequences.long().sort(dim=1).values
    first = torch.ones_like(s, dtype=torch.bool)
    first[:, 1:] = s[:, 1:] != s[:, :-1]
    real = first & (s > 0) & (s <= num_items)
    return torch.bincount(s[real] - 1, minlength=num_items).float()


class TransitionTable(nn.Module):
    """T1's sparse top-k table: row t (a token) holds item columns ``index[t]`` [k] with ``value[t]`` [k].

    Rows 0 (padding) and V+1 (separator) and unused slots have value 0 (their column is then 0 and
    adds nothing). Buffers, not parameters: fitted on T1's train split, never learned; ``k`` is the
    data's (``fill``), so a saved state restores the buffers at the saved shape.
    """

    def __init__(self, num_items: int, index: torch.Tensor | None = None, value: torch.Tensor | None = None) -> None:
        super().__init__()
        self.num_items = num_items
        # int16 columns while they fit (half the bytes of a saved table), int32 past that
        self.index_dtype = torch.int16 if num_items <= torch.iinfo(torch.int16).max else torch.int32
        self.register_buffer("index", torch.zeros(num_items + 2, 0, dtype=self.index_dtype))
        self.register_buffer("value", torch.zeros(num_items + 2, 0))
        if index is not None:
            self.fill(index, value)

    def fill(self, index: torch.Tensor, value: torch.Tensor) -> "TransitionTable":
        """Hold ``index`` / ``value`` [V+2, k] (moved to this table's device)."""
        self.index = index.to(self.index.device, self.index_dtype).contiguous()
        self.value = value.to(self.value.device, torch.float32).contiguous()
        return self

    @property
    def k(self) -> int:
        return self.index.shape[1]

    def rows(self, tokens: torch.Tensor) -> torch.Tensor:
        """The dense table rows [..., V] of tokens [...] (one scatter of their k entries each)."""
        tokens = tokens.long()
        out = torch.zeros(*tokens.shape, self.num_items, device=self.value.device)
        return out.scatter_add_(-1, self.index[tokens].long(), self.value[tokens])


def _pair_chunks(sequences: torch.Tensor, num_items: int, lo: int, hi: int, rows: int):
    """Ordered pairs (a, b) of tokens, a before b in a row, both items, ``lo <= a < hi``: [2, n] per row chunk."""
    length = sequences.shape[1]
    later = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
    for start in range(0, sequences.shape[0], rows):  # chunks bound the [rows, L, L] pair mask
        s = sequences[start:start + rows].long()
        real = (s > 0) & (s <= num_items)
        keep = later & (real & (s >= lo) & (s < hi)).unsqueeze(2) & real.unsqueeze(1)
        yield torch.stack([s.unsqueeze(2).expand(-1, -1, length)[keep], s.unsqueeze(1).expand(-1, length, -1)[keep]])


def _source_blocks(sequences: torch.Tensor, num_items: int, budget: int) -> list[tuple[int, int]]:
    """Token ranges [lo, hi) of about ``budget`` pairs each (at most ``budget`` + one item's pairs)."""
    s = sequences.long()
    real = (s > 0) & (s <= num_items)
    after = real.flip(1).cumsum(1).flip(1) - real.long()  # real items after each position
    mass = torch.zeros(num_items + 2, dtype=torch.long).scatter_add_(0, s.flatten(), (after * real).flatten())
    block = (mass[1:num_items + 1].cumsum(0) - mass[1:num_items + 1]) // budget  # by the pairs before each item
    starts = (torch.nonzero(block[1:] != block[:-1]).flatten() + 2).tolist()
    return list(zip([1] + starts, starts + [num_items + 1]))


def topk_transitions(sequences: torch.Tensor, num_items: int, k: int, budget: int = PAIR_BUDGET
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each item's ``k`` most frequent successors over rows: (index [V+2, k] columns, counts [V+2, k],
    holders [V]); ties keep the lower item. Counted per block of source items (``_source_blocks``) as
    a coalesced sparse matrix, so memory holds one block's pairs, never a dense V x V.
    """
    k = max(1, min(k, num_items))
    index = torch.zeros(num_items + 2, k, dtype=torch.int32)
    counts = torch.zeros(num_items + 2, k)
    rows = max(1, (1 << 24) // sequences.shape[1] ** 2)
    for lo, hi in _source_blocks(sequences, num_items, budget):
        pairs = torch.cat(list(_pair_chunks(sequences, num_items, lo, hi, rows)), dim=1)
        coo = torch.sparse_coo_tensor(pairs, torch.ones(pairs.shape[1]), (num_items + 2, num_items + 2),
                                      check_invariants=True).coalesce()
        src, dst, n = *coo.indices(), coo.values()  # sorted by (src, dst)
        order = torch.argsort(-n, stable=True)  # count descending, ties keep the lower dst ...
        order = order[torch.argsort(src[order], stable=True)]  # ... within each source
        src, dst, n = src[order], dst[order], n[order]
        rank = torch.arange(src.numel()) - torch.searchsorted(src, src)
        top = rank < k
        index[src[top], rank[top]] = (dst[top] - 1).int()  # token j -> column j - 1
        counts[src[top], rank[top]] = n[top]
    return index, counts, item_holders(sequences, num_items)


def transition_table(index: torch.Tensor, counts: torch.Tensor, holders: torch.Tensor, shrink: float,
                     k: int | None = None) -> TransitionTable:
    """The table of the first ``k`` successors: value = count / (holders of the source + shrink)."""
    k = index.shape[1] if k is None else k
    norm = torch.cat([torch.ones(1), holders + shrink, torch.ones(1)]).unsqueeze(1)
    return TransitionTable(holders.numel(), index[:, :k], counts[:, :k] / norm)


def decayed_scores(table: TransitionTable, tokens: torch.Tensor, decay: float) -> torch.Tensor:
    """Wide scores [B, L, V]: position t holds ``sum_{s <= t} decay^(t - s) table[tokens[:, s]]``."""
    rows = table.rows(tokens)
    if decay == 1.0:
        return rows.cumsum(dim=1)
    out, state = [], torch.zeros_like(rows[:, 0])
    for t in range(rows.shape[1]):  # <= max_len steps, each vectorised over the batch and the items
        state = decay * state + rows[:, t]
        out.append(state)
    return torch.stack(out, dim=1)


def decayed_last(table: TransitionTable, tokens: torch.Tensor, decay: float) -> torch.Tensor:
    """``decayed_scores(...)[:, -1]`` [B, V] without the [B, L, V] tensor: one scatter of the prefix's
    [B, L, k] decay-weighted entries (padding's row is zero, so padded positions add nothing)."""
    tokens = tokens.long()
    ages = decay ** torch.arange(tokens.shape[1] - 1, -1, -1, dtype=table.value.dtype, device=tokens.device)
    entries = table.value[tokens] * ages.unsqueeze(1)
    out = torch.zeros(tokens.shape[0], table.num_items, dtype=table.value.dtype, device=tokens.device)
    return out.scatter_add_(1, table.index[tokens].long().flatten(1), entries.flatten(1))


def prefix_pairs(tokens: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(target, source position, target's position, target's row) of every (kept target, non-padding
    token of its prefix) pair; targets numbered row-major, as ``tensor[keep]`` orders them."""
    row, pos = keep.nonzero(as_tuple=True)
    prefix = (torch.arange(tokens.shape[1], device=tokens.device) <= pos.unsqueeze(1)) & (tokens[row] > 0)
    target, src = prefix.nonzero(as_tuple=True)
    return target, src, pos, row


def decayed_at(table: TransitionTable, tokens: torch.Tensor, keep: torch.Tensor, decay: float) -> torch.Tensor:
    """The decayed table scores [T, V] of the kept positions only (``decayed_scores(...)[keep]`` up to float
    rounding) from the prefixes' sparse entries: its cost grows with (prefix length x k) per target,
    not with L x V per row, so a long-tailed catalogue (Games: 9 items a user, rows of 200) never
    builds the [rows, L, V] tensor."""
    tokens = tokens.long()
    target, src, pos, row = prefix_pairs(tokens, keep)
    tok = tokens[row[target], src]
    ages = (pos[target] - src).to(table.value.dtype)
    entries = table.value[tok] * (decay ** ages).unsqueeze(1)
    v = table.num_items
    flat = (target.unsqueeze(1) * v + table.index[tok].long()).flatten()
    out = torch.zeros(int(keep.sum()) * v, dtype=table.value.dtype, device=tokens.device)
    return out.index_add_(0, flat, entries.flatten()).view(-1, v)


def prefix_entries(sequences: torch.Tensor, k: int) -> torch.Tensor:
    """Per T1 row [rows, L]: the table entries its targets' prefixes read (every prefix of its items, k each)."""
    real = (sequences > 0).sum(1).double()
    return real * (real + 1) / 2 * max(k, 1)


def target_chunks(sequences: torch.Tensor, table: TransitionTable, t1_targets: str = "all",
                  budget: float = FULL_SCORES) -> list[int]:
    """Row chunks for the "targets" path: each chunk's [targets, V] scores plus its entries within ``budget``."""
    targets = t1_target_mask(sequences, t1_targets).sum(1).double()
    return row_chunks(targets * table.num_items + prefix_entries(sequences, table.k), budget)


def table_path(sequences: torch.Tensor, table: TransitionTable, t1_targets: str = "all", ranks: bool = True) -> str:
    """How to score the table on T1 rows [rows, L], the cheapest by element count: "dense" ([rows, L, V]
    from ``decayed_scores``), "targets" ([targets, V] plus the prefixes' entries, ``decayed_at``) or, when
    only ranks are wanted, "sparse" (``table_ranks``: the entries alone, each a sort key, ~64x dearer)."""
    entries = float(prefix_entries(sequences, table.k).sum())
    targets = float(t1_target_mask(sequences, t1_targets).sum())
    costs = {"dense": float(sequences.shape[0] * sequences.shape[1]) * table.num_items,
             "targets": targets * table.num_items + entries, "sparse": 64.0 * entries if ranks else float("inf")}
    return min(costs, key=costs.get)  # ties: the first


def table_ranks(table: TransitionTable, sequences: torch.Tensor, keep: torch.Tensor, decay: float) -> torch.Tensor:
    """0-based ranks (``metrics.target_ranks``' rule) of the targets ``sequences[:, 1:][keep]`` among all V
    items under their prefix's decayed table scores, from the sparse scores alone (no [targets, V]).

    A target's scores are nonzero on at most (prefix length x k) items, summed position by position
    as ``decayed_scores`` does (so equal to its floats): items ahead of the target are those entries
    above it, or equal and lower; a target off its entries (score 0) also has every zero-score item
    of a lower index ahead of it.
    """
    tokens = sequences[:, :-1].long()
    v = table.num_items
    y = sequences[:, 1:][keep].long() - 1
    target, src, pos, row = prefix_pairs(tokens, keep)
    tok = tokens[row[target], src]
    vals, cols = table.value[tok], table.index[tok].long()
    real = vals > 0  # unused slots hold 0
    step = src.unsqueeze(1).expand_as(cols)[real]
    keys, slot = torch.unique(target.unsqueeze(1).expand_as(cols)[real] * v + cols[real], return_inverse=True)
    order = torch.argsort(step, stable=True)
    slot, vals, bounds = slot[order], vals[real][order], torch.bincount(step, minlength=tokens.shape[1]).cumsum(0).tolist()
    # keys by their target's position, latest first: the keys step s decays are then a prefix
    by_pos = torch.argsort(pos[keys // v], descending=True, stable=True)
    keys, slot = keys[by_pos], torch.argsort(by_pos)[slot]
    who, cols = keys // v, keys % v
    live = torch.bincount(pos[who], minlength=tokens.shape[1]).flip(0).cumsum(0).flip(0).tolist()  # pos >= s
    # decay 1 is decayed_scores' cumsum, which accumulates float32 in float64 and rounds once
    acc = torch.float64 if decay == 1.0 else vals.dtype
    scores, vals, since = torch.zeros(keys.numel(), dtype=acc, device=vals.device), vals.to(acc), 0
    for s, upto in enumerate(bounds):  # <= max_len steps; a table row's columns are distinct, one add per key
        if decay != 1.0:
            scores[:live[s]].mul_(decay)  # decayed_scores' decay * state, on the targets at or after s only
        scores.index_add_(0, slot[since:upto], vals[since:upto])
        since = upto
    scores = scores.to(table.value.dtype)
    hit = cols == y[who]
    target_score = torch.zeros(y.numel(), dtype=scores.dtype, device=scores.device).index_add_(0, who[hit], scores[hit])
    mine = target_score[who]
    ahead = (scores > mine) | ((scores == mine) & (cols < y[who]))
    ranks = torch.bincount(who[ahead], minlength=y.numel())
    lower = torch.bincount(who[cols < y[who]], minlength=y.numel())  # entries of a lower item
    return ranks + (target_score == 0) * (y - lower)


def row_chunks(costs: torch.Tensor, budget: float) -> list[int]:
    """Sizes of consecutive row chunks whose summed ``costs`` stay within ``budget`` (a row past it alone)."""
    start = costs.double().cumsum(0) - costs.double()
    _, sizes = torch.unique_consecutive(torch.div(start, budget, rounding_mode="floor"), return_counts=True)
    return sizes.tolist()


def table_mrr(table: TransitionTable, sequences: torch.Tensor, decay: float, t1_targets: str = "all") -> float:
    """MRR@5 of the table alone on T1 rows (the targets ``TaskModel.evaluate`` scores).

    Scored by the cheapest of ``table_path``'s three ways, in chunks of bounded size.
    """
    acc = MetricAccumulator()
    rows, length = sequences.shape
    path = table_path(sequences, table, t1_targets)
    if path == "dense":
        sizes = max(1, min(rows, FULL_SCORES // (length * table.num_items)))
    elif path == "targets":  # each row's own targets and entries: a few long rows do not size every chunk
        sizes = target_chunks(sequences, table, t1_targets)
    else:
        sizes = row_chunks(prefix_entries(sequences, table.k), ENTRY_BUDGET)
    for seqs in sequences.split(sizes):
        keep = t1_target_mask(seqs, t1_targets)
        if path == "dense":
            acc.add_ranks(target_ranks(decayed_scores(table, seqs[:, :-1], decay)[keep], seqs[:, 1:][keep] - 1))
        elif path == "targets":
            acc.add_ranks(target_ranks(decayed_at(table, seqs[:, :-1], keep, decay), seqs[:, 1:][keep] - 1))
        else:
            acc.add_ranks(table_ranks(table, seqs, keep, decay))
    return acc.means()["mrr@5"]


def fit_transitions(train: torch.Tensor, valid: torch.Tensor, num_items: int, t1_targets: str = "all",
                    k: int | None = None) -> dict:
    """The transition table of ``train`` rows with the shrink, decay and k of best validation MRR@5.

    Shrink and decay are chosen with the largest k (of ``TOPK`` within ``TABLE_BYTES``, or the given
    ``k``), then k (``K_EPSILON``). Returns ``{"table", "k", "shrink", "decay", "valid", "valid_k<k>"
    per k tried}`` (``valid``: the table's own MRR@5).
    """
    grid = [k] if k else [c for c in TOPK if (num_items + 2) * c * 8 <= TABLE_BYTES] or [min(TOPK)]
    index, counts, holders = topk_transitions(train, num_items, max(grid))
    best = None
    for shrink in SHRINK:
        table = transition_table(index, counts, holders, shrink)
        for decay in DECAY:
            mrr = table_mrr(table, valid, decay, t1_targets)
            if best is None or mrr > best[0]:
                best = (mrr, shrink, decay)
    _, shrink, decay = best
    curve = {c: table_mrr(transition_table(index, counts, holders, shrink, c), valid, decay, t1_targets)
             for c in sorted({min(c, index.shape[1]) for c in grid})}
    k = min(c for c in curve if curve[c] >= (1.0 - K_EPSILON) * max(curve.values()))
    return {"table": transition_table(index, counts, holders, shrink, k), "k": k, "shrink": shrink,
            "decay": decay, "valid": curve[k], **{f"valid_k{c}": m for c, m in curve.items()}}
