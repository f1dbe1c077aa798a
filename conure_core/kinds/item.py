"""``item``: items a user will like (a label is an item id); full-ranking MRR@5 over the task's items."""
from __future__ import annotations

from conure_core.deferred import Deferred
from conure_core.kinds.base import RanksItems, UserKind, UserLoss, popularity_floor, rank_into

# torch and the modules that compute load on first use: a kind's facts need neither (conure_core/deferred.py)
torch = Deferred("torch")
losses = Deferred("conure_core.losses")
samplers = Deferred("conure_core.samplers")

class ItemKind(RanksItems, UserKind):
    """The items a user will like, ranked over the task's own item vocabulary."""

    name = "item"
    display = "item"

    def loss(self, model, task, info, cfg, generator):
        return ItemLoss(model, task, info, cfg, generator)

    def score_batch(self, acc, head, g, y):
        rank_into(acc, head, g, y)

    def floor(self, task, split="test", t1_targets="all"):
        return "popularity", popularity_floor(self.prior(task), task.labels[task.rows(split)])


class ItemLoss(UserLoss):
    """``cfg.item_loss``: "softmax" over the task's items, or BPR ("bpr" | "bpr_logq") against negatives
    drawn from the popularity sampler; epochs keep a user's rows together (``cfg.group_by_user``)."""

    def __init__(self, model, task, info, cfg, generator) -> None:
        super().__init__(model, task, info, cfg, generator)
        self.sampler = samplers.PopularitySampler(self.labels, info.num_labels)
        self.log_q = self.sampler.probs.log().float().to(model.device) if cfg.item_loss == "bpr_logq" else None

    def order(self, generator: torch.Generator) -> torch.Tensor:
        return grouped_order(self.row_users, generator) if self.cfg.group_by_user else super().order(generator)

    def objective(self, g, y, idx):
        if self.cfg.item_loss == "softmax":
            return losses.class_loss(g, self.head, y)
        negatives = self.sampler.sample(idx.numel(), self.generator).to(self.model.device)
        return losses.bpr_loss(g, self.head, y, negatives, self.log_q)


def grouped_order(row_users: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A permutation of rows that keeps each user's rows together (users and rows within a user shuffled).

    Every row is still seen once per epoch and batches keep their row count, but a batch of 512
    rows then holds ~15 users instead of ~400, so the backbone encodes ~25x fewer sequences per epoch.
    """
    num_users = int(row_users.max()) + 1 if row_users.numel() else 0
    user_pos = torch.randperm(num_users, generator=generator).double()
    within = torch.rand(row_users.numel(), generator=generator, dtype=torch.float64)
    return torch.argsort(user_pos[row_users] + 0.5 * within, stable=True)
