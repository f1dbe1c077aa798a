"""One head per task, on top of the shared user encoder (SPEC section 4)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from conure_core.wide import ItemBag, TransitionTable, decayed_last, decayed_scores

HEAD_KINDS = ("sequence", "item", "class")


class NextItemHead(nn.Module):
    """T1: logits over the T1 items 1..V (output column i is token i + 1)."""

    kind = "sequence"

    def __init__(self, width: int, num_labels: int, generator: torch.Generator | None = None,
                 prior: torch.Tensor | None = None, init_scale: float = 1.0, normalize: bool = False,
                 bag: int = 0, wide_items: int = 0) -> None:
        super().__init__()
        # normalize: a parameter-free LayerNorm on the user vector (the backbone has no final LN, so
        # g's scale drifts with depth; a linear probe on standardised g beat the raw one on gender).
        self.normalize = normalize
        self.width = width
        std = init_scale / math.sqrt(width)
        weight = torch.randn(num_labels, width, generator=generator) * std
        self.weight = nn.Parameter(weight)
        # bag: the input ends with the slots of a bag of ``bag`` T1 items (user_repr / class_repr "mean_bag",
        # ``wide.bag_slots``), read by a sparse weight per item and label that is never normalised.
        self.bag = ItemBag(bag, num_labels) if bag else None
        # Bias starts at the log label frequency of the TRAIN split when given ("init well": the head
        # starts as the popularity / class-prior model and training adds the user-dependent part).
        bias = torch.zeros(num_labels) if prior is None else torch.log(prior.double() + 1.0).float()
        self.bias = nn.Parameter(bias)
        # wide_items: T1's item-to-item table (conure_core.wide), fitted on T1's train split, not learned;
        # the head adds wide_scale * its decayed prefix scores to the TCN's logits (0: the TCN alone).
        self.wide = wide_items > 0
        self.deep_only = False  # set while a T1 stage trains and selects the TCN on its own logits
        if self.wide:
            self.wide_table = TransitionTable(wide_items)  # sparse top-k: [V+2, k] columns and values
            self.register_buffer("wide_decay", torch.ones(()))
            self.register_buffer("wide_scale", torch.zeros(()))

    def _prep(self, h: torch.Tensor) -> torch.Tensor:
        """The TCN part of the input (its first ``width`` columns), normalised when ``normalize``."""
        h = h[..., :self.width]
        return F.layer_norm(h, h.shape[-1:], eps=1e-5) if self.normalize else h

    def scores(self, h: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [N, K] of inputs h [N, C (+ bag slots)]; ``offset`` [N, K] (T1's wide scores) is added."""
        logits = self._prep(h) @ self.weight.t() + self.bias
        if self.bag is not None:
            logits = logits + self.bag(h[..., self.width:])
        return logits if offset is None else logits + offset

    def wide_scores(self, tokens: torch.Tensor, last: bool = False) -> torch.Tensor | None:
        """T1 only: scale * decayed table scores [B, L, V] of token prefixes [B, L] (``last``: of the last
        position only, [B, V]); None when the head has no table, its scale is 0, or it is ``deep_only``."""
        if not self.wide or self.deep_only or float(self.wide_scale) == 0.0:
            return None
        scores = decayed_last if last else decayed_scores
        return self.wide_scale * scores(self.wide_table, tokens, float(self.wide_decay))

    def pair_scores(self, h: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Logits of given columns: h [N, C], ids [N, M] -> [N, M]."""
        out = torch.einsum("nc,nmc->nm", self._prep(h), self.weight[ids]) + self.bias[ids]
        return out if self.bag is None else out + self.bag(h[..., self.width:]).gather(1, ids)


class ItemHead(NextItemHead):
    """Item tasks: an item table of the task's label vocabulary plus a per-item bias, dot product with g."""

    kind = "item"


class ClassHead(NextItemHead):
    """Classification tasks: a linear layer to the task's classes (softmax cross-entropy)."""

    kind = "class"


def build_head(kind: str, width: int, num_labels: int, generator: torch.Generator | None = None,
               prior: torch.Tensor | None = None, init_scale: float = 1.0, normalize: bool = False,
               bag: int = 0, wide_items: int = 0) -> NextItemHead:
    """A fresh head of ``kind`` ("sequence" | "item" | "class") with ``num_labels`` outputs.

    ``prior``: train-split label counts for the bias init; ``init_scale`` scales the N(0, 1/C) weights;
    ``normalize``: parameter-free LayerNorm on the user vector (item / class tasks only);
    ``bag``: T1 items of the bag whose slots end the user vector (``ItemBag``); ``wide_items``: T1's transition table size.
    """
    classes = {"sequence": NextItemHead, "item": ItemHead, "class": ClassHead}
    if kind not in classes:
        raise ValueError(f"task kind {kind!r} has no head; use one of {HEAD_KINDS}.")
    return classes[kind](width, num_labels, generator, prior, init_scale, normalize and kind != "sequence",
                         bag, wide_items)
