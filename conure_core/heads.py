"""The heads on top of the shared user encoder (SPEC section 4); which kind uses which is ``conure_core.kinds``."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from conure_core.wide import ItemBag, TransitionTable, decayed_last, decayed_scores


class LinearHead(nn.Module):
    """Logits [N, K] = g W^T + b over a task's K labels (K = 1: a number); g may end with a bag of T1 items
    (its slots, read by the sparse ``ItemBag``)."""

    wide = False  # only T1's head (``NextItemHead``) may hold the item-to-item table

    def __init__(self, width: int, num_labels: int, generator: torch.Generator | None = None,
                 bias: torch.Tensor | None = None, init_scale: float = 1.0, normalize: bool = False,
                 bag: int = 0) -> None:
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
        # ``bias``: where the kind starts the head from the TRAIN split ("init well": the log label
        # frequency for ids, the mean for a number), so training adds the user-dependent part.
        self.bias = nn.Parameter(torch.zeros(num_labels) if bias is None else bias.float())

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

    def pair_scores(self, h: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Logits of given columns: h [N, C], ids [N, M] -> [N, M]."""
        out = torch.einsum("nc,nmc->nm", self._prep(h), self.weight[ids]) + self.bias[ids]
        return out if self.bag is None else out + self.bag(h[..., self.width:]).gather(1, ids)

    @property
    def fused(self) -> bool:
        """Whether the logits add T1's table scores (see ``NextItemHead``)."""
        return False

    def wide_scores(self, tokens: torch.Tensor, last: bool = False) -> torch.Tensor | None:
        """No table: None (see ``NextItemHead``)."""
        return None


class NextItemHead(LinearHead):
    """T1: logits over the T1 items 1..V (output column i is token i + 1), plus the optional wide table."""

    def __init__(self, width: int, num_labels: int, generator: torch.Generator | None = None,
                 bias: torch.Tensor | None = None, init_scale: float = 1.0, normalize: bool = False,
                 bag: int = 0, wide_items: int = 0) -> None:
        super().__init__(width, num_labels, generator, bias, init_scale, normalize, bag)
        # wide_items: T1's item-to-item table (conure_core.wide), fitted on T1's train split, not learned;
        # the head adds wide_scale * its decayed prefix scores to the TCN's logits (0: the TCN alone).
        self.wide = wide_items > 0
        self.deep_only = False  # set while a T1 stage trains and selects the TCN on its own logits
        if self.wide:
            self.wide_table = TransitionTable(wide_items)  # sparse top-k: [V+2, k] columns and values
            self.register_buffer("wide_decay", torch.ones(()))
            self.register_buffer("wide_scale", torch.zeros(()))

    @property
    def fused(self) -> bool:
        """A table, its scale not 0, and not ``deep_only``."""
        return self.wide and not self.deep_only and float(self.wide_scale) != 0.0

    def wide_scores(self, tokens: torch.Tensor, last: bool = False) -> torch.Tensor | None:
        """scale * decayed table scores [B, L, V] of token prefixes [B, L] (``last``: of the last
        position only, [B, V]); None when the head has no table, its scale is 0, or it is ``deep_only``."""
        if not self.fused:
            return None
        scores = decayed_last if last else decayed_scores
        return self.wide_scale * scores(self.wide_table, tokens, float(self.wide_decay))


def build_head(kind: str, width: int, num_labels: int, generator: torch.Generator | None = None,
               prior: torch.Tensor | None = None, init_scale: float = 1.0, normalize: bool = False,
               bag: int = 0, wide_items: int = 0) -> LinearHead:
    """A fresh head of task kind ``kind`` with ``num_labels`` outputs (the kind's ``build_head``).

    ``prior``: the kind's train-split statistic for the bias init (``TaskKind.prior``); ``init_scale``
    scales the N(0, 1/C) weights; ``normalize``: parameter-free LayerNorm on the user vector (tasks after
    T1 only); ``bag``: T1 items of the bag whose slots end the user vector (``ItemBag``); ``wide_items``:
    T1's table size.
    """
    from conure_core.kinds import kind_of  # the kinds build on these heads: resolved at call time

    return kind_of(kind).build_head(width, num_labels, generator, prior, init_scale, normalize, bag, wide_items)
