"""What every backbone (TCN, Transformer) offers the learner and the strategies."""
from __future__ import annotations

from typing import Protocol

import torch
from torch import nn


class Backbone(Protocol):
    """A user encoder over T1 token sequences.

    forward(tokens [B, L] int64) -> hidden states [B, L, C]; position t sees tokens <= t only (causal).
    ``prunable_names()`` lists the parameter names (as in ``named_parameters()``) that carry an owner
    map; everything else (embedding, LayerNorms) trains in T1's first stage only.
    Masked/effective weights are applied from outside with ``torch.func.functional_call`` or by the
    ownership module; a backbone never knows about tasks.
    """

    width: int
    embedding: nn.Embedding

    def forward(self, tokens: torch.Tensor) -> torch.Tensor: ...

    def prunable_names(self) -> list[str]: ...
