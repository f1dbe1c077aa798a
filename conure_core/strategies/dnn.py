"""DNN baseline (paper section 5.1, YouTube-DNN style): a two-layer MLP over the bag of the user's T1
items, one fresh model per task (no transfer, no sequence order)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from conure_core.model import TaskModel
from conure_core.seeding import stage_generator
from conure_core.strategies.sinmo import SinMo


class BagMLP(nn.Module):
    """Encoder: position t = MLP(mean of the embeddings of the non-padding tokens <= t).

    A running (causal) mean keeps the Backbone contract (``forward(tokens) -> [B, L, C]``,
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

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embedding(tokens)
        count = (tokens != 0).cumsum(dim=1).clamp(min=1).unsqueeze(-1).to(x.dtype)
        bag = x.cumsum(dim=1) / count  # padding embeds to 0, so it adds nothing to the sums
        return self.fc2(F.relu(self.fc1(bag)))


class DNN(SinMo):
    """A fresh BagMLP + head per task (T1 included), trained with the same pipeline as every strategy."""

    name = "dnn"
    shares_t1 = False

    def new_model(self) -> TaskModel:
        bag = BagMLP(self.num_items, self.preset.model.width, stage_generator(self.preset.model.seed, 0, "dnn"))
        return TaskModel(self.preset.model, self.num_items, self.item_vocab, self.device, backbone=bag)
