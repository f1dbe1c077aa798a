"""A growing item catalogue: items unknown to T1 that a later task introduces (its labels) get new
embedding rows, owned by that task; T1's tokens and every earlier row never move.

Tokens: 0 padding, 1..V T1's items, V + 1 the separator, V + 2 + i the i-th item introduced later
(in learning order). A task at learning position j reads the items of T1 and of tasks 1..j; a
history's item introduced by a later task is unknown to it. Earlier tasks' answers for histories of
earlier items are bit-identical, because an embedding lookup of a row does not depend on rows added
after it (tests/core/test_catalogue.py). An item task's own head already holds an output row per
label, so the new items are ranked by the task that introduced them.
"""
from __future__ import annotations

import torch


def introduced(labels: list[str], known: set[str]) -> list[str]:
    """A task's labels that the catalogue does not hold yet, in the task's label order."""
    return [str(v) for v in labels if str(v) not in known]


@torch.no_grad()
def new_item_rows(embedding: torch.Tensor, num_items: int, sequences: torch.Tensor, labels: torch.Tensor,
                  slots: torch.Tensor, count: int) -> torch.Tensor:
    """Embedding rows [count, C] of new items: each the mean, over the train rows labelled with it, of the
    mean embedding of that row's T1 items (what the item's users interacted with); an item with no
    train row gets the mean T1 item embedding. ``slots`` maps a label position to its new item (-1: none).

    Computed on the CPU in float64 then cast, so the rows are the same on every device and thread count.
    """
    table = embedding.detach().double().cpu()
    seqs = sequences.long().cpu()
    known = ((seqs >= 1) & (seqs <= num_items)).unsqueeze(-1).double()
    users = (table[seqs.clamp(max=num_items + 1)] * known).sum(1) / known.sum(1).clamp(min=1.0)
    slot = slots.cpu()[labels.long().cpu()]
    mine = slot >= 0
    sums = torch.zeros(count, table.shape[1], dtype=torch.float64).index_add_(0, slot[mine], users[mine])
    counts = torch.bincount(slot[mine], minlength=count).double().unsqueeze(1)
    fallback = table[1:num_items + 1].mean(0).expand(count, -1)
    rows = torch.where(counts > 0, sums / counts.clamp(min=1.0), fallback)
    return rows.to(embedding.dtype)
