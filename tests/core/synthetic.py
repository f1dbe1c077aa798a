"""Small synthetic tasks with learnable structure, for fast deterministic tests."""
from __future__ import annotations

import torch

from conure_core.data.types import TaskData


def make_tasks(num_users: int = 160, num_items: int = 40, length: int = 10, seed: int = 0) -> list[TaskData]:
    """T1 (sequence), an item task and a class task over the same users.

    Each user belongs to one of 4 groups; a group's items are a contiguous id range, so the next
    item, the liked item and the class are all predictable from the sequence.
    """
    g = torch.Generator().manual_seed(seed)
    groups = torch.randint(0, 4, (num_users,), generator=g)
    per_group = num_items // 4
    lengths = torch.randint(4, length + 1, (num_users,), generator=g)
    items = groups.view(-1, 1) * per_group + 1 + torch.randint(0, per_group, (num_users, length), generator=g)
    pos = torch.arange(length).view(1, -1)
    sequences = torch.where(pos >= length - lengths.view(-1, 1), items, torch.zeros_like(items))
    split = torch.zeros(num_users, dtype=torch.int8)
    r = torch.rand(num_users, generator=g)
    split[r > 0.8] = 1
    split[r > 0.85] = 2
    users = [f"u{i}" for i in range(num_users)]
    vocab = [f"i{i}" for i in range(1, num_items + 1)]
    t1 = TaskData("clicks", "sequence", sequences, None, split, users, vocab, num_items)

    # Item task: 3 rows per user, label in the user's group range of a 12-item vocabulary.
    reps = 3
    rows_user = torch.arange(num_users).repeat_interleave(reps)
    k_items = 12
    labels = groups[rows_user] * (k_items // 4) + torch.randint(0, k_items // 4, (rows_user.numel(),), generator=g)
    r2 = torch.rand(rows_user.numel(), generator=g)
    split2 = torch.zeros(rows_user.numel(), dtype=torch.int8)
    split2[r2 > 0.8] = 1
    split2[r2 > 0.85] = 2
    item = TaskData("liked", "item", sequences[rows_user], labels, split2, [users[i] for i in rows_user.tolist()],
                    [f"l{i}" for i in range(k_items)], num_items)

    cls = TaskData("gender", "class", sequences.clone(), (groups % 2).long(), split.clone(), list(users), ["F", "M"], num_items)
    return [t1, item, cls]
