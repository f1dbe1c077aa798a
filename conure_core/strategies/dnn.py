"""DNN baseline (paper section 5.1, YouTube-DNN style): a two-layer MLP over the bag of the user's T1
items, one fresh model per task (no transfer, no sequence order)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from conure_core.seeding import stage_generator
from conure_core.strategies.sinmo import SinMo


class BagMLP(nn.Module):
    """Encoder: position t = MLP(mean of the embeddings of the non-padding tokens <= t).

    A running (causal) mean keeps the Backbone contract (``forward(tokens, weights) -> [B, L, C]``,
    position t sees tokens <= t), so T1 predicts the next item from the bag of the items so far and
    a later task reads the whole bag (plus the separator) at the last position.
    """

    def __init__(self, num_items: int, width: int = 64, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.width, self.num_items = width, num_items
        self.embedding = nn.Embedding(num_items + 2, width, padding_idx=0)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        with torch.no_grad():
            self.embedding.weight.copy_(torch.randn(self.embedding.weight.shape, generator=generator) / math.sqrt(width))
            self.embedding.weight[0].zero_()
            for fc in (self.fc1, self.fc2):
                fc.weight.copy_(torch.randn(fc.weight.shape, generator=generator) / math.sqrt(width))
                fc.bias.zero_()

    def prunable_names(self) -> list[str]:
        return ["fc1.weight", "fc2.weight"]

    def forward(self, tokens: torch.Tensor, weights: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        w = weights or {}
        x = F.embedding(tokens, w.get("embedding.weight", self.embedding.weight), padding_idx=0)
        count = (tokens != 0).cumsum(dim=1).clamp(min=1).unsqueeze(-1).to(x.dtype)
        bag = x.cumsum(dim=1) / count  # padding embeds to 0, so it adds nothing to the sums
        h = F.relu(F.linear(bag, w.get("fc1.weight", self.fc1.weight), self.fc1.bias))
        return F.linear(h, w.get("fc2.weight", self.fc2.weight), self.fc2.bias)


class DNN(SinMo):
    """A fresh BagMLP + head per task (T1 included), trained with the same pipeline as every strategy."""

    name = "dnn"
    shares_t1 = False

    def new_model(self):
        model = self.fresh(any_first_kind=True)
        model.replace_backbone(BagMLP(self.num_items, self.preset.model.width,
                                      stage_generator(self.preset.model.seed, 0, "dnn")))
        return model
