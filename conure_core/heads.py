"""One head per task, on top of the shared user encoder (SPEC section 4)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

HEAD_KINDS = ("sequence", "item", "class")


class NextItemHead(nn.Module):
    """T1: logits over the T1 items 1..V (output column i is token i + 1)."""

    kind = "sequence"

    def __init__(self, width: int, num_labels: int, generator: torch.Generator | None = None,
                 prior: torch.Tensor | None = None, init_scale: float = 1.0, normalize: bool = False) -> None:
        super().__init__()
        # normalize: a parameter-free LayerNorm on the user vector (the backbone has no final LN, so
        # g's scale drifts with depth; a linear probe on standardised g beat the raw one on gender).
        self.normalize = normalize
        std = init_scale / math.sqrt(width)
        self.weight = nn.Parameter(torch.randn(num_labels, width, generator=generator) * std)
        # Bias starts at the log label frequency of the TRAIN split when given ("init well": the head
        # starts as the popularity / class-prior model and training adds the user-dependent part).
        bias = torch.zeros(num_labels) if prior is None else torch.log(prior.double() + 1.0).float()
        self.bias = nn.Parameter(bias)

    def _prep(self, h: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(h, h.shape[-1:], eps=1e-5) if self.normalize else h

    def scores(self, h: torch.Tensor) -> torch.Tensor:
        return self._prep(h) @ self.weight.t() + self.bias

    def pair_scores(self, h: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Logits of given columns: h [N, C], ids [N, M] -> [N, M]."""
        return torch.einsum("nc,nmc->nm", self._prep(h), self.weight[ids]) + self.bias[ids]


class ItemHead(NextItemHead):
    """Item tasks: an item table of the task's label vocabulary plus a per-item bias, dot product with g."""

    kind = "item"


class ClassHead(NextItemHead):
    """Classification tasks: a linear layer to the task's classes (softmax cross-entropy)."""

    kind = "class"


def build_head(kind: str, width: int, num_labels: int, generator: torch.Generator | None = None,
               prior: torch.Tensor | None = None, init_scale: float = 1.0, normalize: bool = False) -> NextItemHead:
    """A fresh head of ``kind`` ("sequence" | "item" | "class") with ``num_labels`` outputs.

    ``prior``: train-split label counts for the bias init; ``init_scale`` scales the N(0, 1/C) weights;
    ``normalize``: parameter-free LayerNorm on the user vector (item / class tasks only).
    """
    classes = {"sequence": NextItemHead, "item": ItemHead, "class": ClassHead}
    if kind not in classes:
        raise ValueError(f"task kind {kind!r} has no head; use one of {HEAD_KINDS}.")
    return classes[kind](width, num_labels, generator, prior, init_scale, normalize and kind != "sequence")
